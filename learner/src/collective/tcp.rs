//! [`TcpCollective`]: test scaffolding that lets the data-parallel logic be tested on a CPU
//! with several ranks on loopback (a star through rank 0). It is not a cluster layer: GPUs
//! use NCCL (`nccl.rs`). Its byte broadcast also carries NCCL's unique id from rank 0 to
//! ranks in other processes.

use super::Collective;
use crate::error::{LearnerError, Result};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};

/// A star over TCP: rank 0 sums what every other rank sends and sends the sum back.
pub struct TcpCollective {
    rank: usize,
    world: usize,
    /// Rank 0: a stream per other rank, indexed by rank - 1. Others: the stream to rank 0.
    peers: Vec<TcpStream>,
}

fn io(e: std::io::Error) -> LearnerError {
    LearnerError::io("<collective>", e)
}

impl TcpCollective {
    /// Rank 0: accepts the other `world - 1` ranks on `listener`.
    pub fn root(listener: TcpListener, world: usize) -> Result<Self> {
        let mut peers: Vec<Option<TcpStream>> = (1..world).map(|_| None).collect();
        for _ in 1..world {
            let (mut s, _) = listener.accept().map_err(io)?;
            s.set_nodelay(true).map_err(io)?;
            let mut rank = [0u8; 8];
            s.read_exact(&mut rank).map_err(io)?;
            let rank = u64::from_le_bytes(rank) as usize;
            if rank == 0 || rank >= world || peers[rank - 1].is_some() {
                return Err(LearnerError::Collective(format!(
                    "rank {rank} joined twice or is out of range"
                )));
            }
            peers[rank - 1] = Some(s);
        }
        Ok(TcpCollective {
            rank: 0,
            world,
            peers: peers
                .into_iter()
                .map(|p| p.expect("every rank joined"))
                .collect(),
        })
    }

    /// Rank `rank` (> 0): connects to rank 0 at `addr`.
    pub fn connect(addr: impl ToSocketAddrs, rank: usize, world: usize) -> Result<Self> {
        let mut s = TcpStream::connect(addr).map_err(io)?;
        s.set_nodelay(true).map_err(io)?;
        s.write_all(&(rank as u64).to_le_bytes()).map_err(io)?;
        Ok(TcpCollective {
            rank,
            world,
            peers: vec![s],
        })
    }
}

fn send(s: &mut TcpStream, data: &[f32]) -> Result<()> {
    let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    send_bytes(s, data.len(), &bytes)
}

/// A frame: the element count (u64, little-endian), then the payload.
fn send_bytes(s: &mut TcpStream, count: usize, bytes: &[u8]) -> Result<()> {
    s.write_all(&(count as u64).to_le_bytes()).map_err(io)?;
    s.write_all(bytes).map_err(io)
}

/// Reads a frame of `expected` elements of `width` bytes each.
fn recv_bytes(s: &mut TcpStream, expected: usize, width: usize) -> Result<Vec<u8>> {
    let mut len = [0u8; 8];
    s.read_exact(&mut len).map_err(io)?;
    let len = u64::from_le_bytes(len) as usize;
    if len != expected {
        return Err(LearnerError::Collective(format!(
            "a collective of {expected} values met a peer sending {len}"
        )));
    }
    let mut bytes = vec![0u8; len * width];
    s.read_exact(&mut bytes).map_err(io)?;
    Ok(bytes)
}

fn recv(s: &mut TcpStream, expected: usize) -> Result<Vec<f32>> {
    let bytes = recv_bytes(s, expected, 4)?;
    Ok(bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

impl TcpCollective {
    /// Rank 0's `bytes` on every rank (every rank passes a buffer of the same length). This
    /// is how rank 0 hands NCCL's unique id to ranks in other processes.
    pub fn broadcast_bytes(&mut self, bytes: &mut [u8]) -> Result<()> {
        if self.rank == 0 {
            for peer in &mut self.peers {
                send_bytes(peer, bytes.len(), bytes)?;
            }
        } else {
            bytes.copy_from_slice(&recv_bytes(&mut self.peers[0], bytes.len(), 1)?);
        }
        Ok(())
    }
}

impl Collective for TcpCollective {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world_size(&self) -> usize {
        self.world
    }
    fn all_reduce_sum(&mut self, data: &mut [f32]) -> Result<()> {
        if self.rank == 0 {
            // Sum in rank order, so every run adds in the same order.
            let n = data.len();
            for peer in &mut self.peers {
                for (d, v) in data.iter_mut().zip(recv(peer, n)?) {
                    *d += v;
                }
            }
            for peer in &mut self.peers {
                send(peer, data)?;
            }
        } else {
            send(&mut self.peers[0], data)?;
            data.copy_from_slice(&recv(&mut self.peers[0], data.len())?);
        }
        Ok(())
    }
    fn broadcast(&mut self, data: &mut [f32]) -> Result<()> {
        if self.rank == 0 {
            for peer in &mut self.peers {
                send(peer, data)?;
            }
        } else {
            data.copy_from_slice(&recv(&mut self.peers[0], data.len())?);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_ranks_sum_on_loopback() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let others: Vec<_> = (1..3)
            .map(|rank| {
                std::thread::spawn(move || {
                    let mut c = TcpCollective::connect(addr, rank, 3).unwrap();
                    let mut data = vec![rank as f32, 10.0 * rank as f32];
                    c.all_reduce_sum(&mut data).unwrap();
                    data
                })
            })
            .collect();
        let mut root = TcpCollective::root(listener, 3).unwrap();
        let mut data = vec![0.5, 0.25];
        root.all_reduce_sum(&mut data).unwrap();
        assert_eq!(data, vec![3.5, 30.25]);
        for h in others {
            assert_eq!(h.join().unwrap(), vec![3.5, 30.25]);
        }
    }

    #[test]
    fn rank_zero_broadcasts_values_and_bytes() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let others: Vec<_> = (1..3)
            .map(|rank| {
                std::thread::spawn(move || {
                    let mut c = TcpCollective::connect(addr, rank, 3).unwrap();
                    let mut data = vec![rank as f32; 3];
                    c.broadcast(&mut data).unwrap();
                    let mut id = [0u8; 128];
                    c.broadcast_bytes(&mut id).unwrap();
                    (data, id)
                })
            })
            .collect();
        let mut root = TcpCollective::root(listener, 3).unwrap();
        let mut data = vec![1.5, -2.0, 7.0];
        root.broadcast(&mut data).unwrap();
        let mut id = [0u8; 128];
        id.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
        root.broadcast_bytes(&mut id).unwrap();
        assert_eq!(data, vec![1.5, -2.0, 7.0]);
        for h in others {
            let (d, got) = h.join().unwrap();
            assert_eq!(d, vec![1.5, -2.0, 7.0]);
            assert_eq!(got, id);
        }
    }

    #[test]
    fn a_length_mismatch_is_an_error_not_garbage() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let other = std::thread::spawn(move || {
            let mut c = TcpCollective::connect(addr, 1, 2).unwrap();
            c.broadcast(&mut [0.0; 2])
        });
        let mut root = TcpCollective::root(listener, 2).unwrap();
        root.broadcast(&mut [1.0; 3]).unwrap();
        let e = other.join().unwrap().unwrap_err().to_string();
        assert!(e.contains("3"), "{e}");
    }
}
