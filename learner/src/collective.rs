//! Collectives for a data-parallel learner, behind one small trait.
//!
//! Production multi-GPU runs are meant to implement [`Collective`] with NCCL (through
//! cudarc's bindings; not built yet, see the README's GPU section). [`TcpCollective`] is
//! test scaffolding: it lets the data-parallel logic be tested on a CPU with several ranks
//! on loopback. It is not a cluster layer: across machines, use Kubernetes and NCCL.

use crate::error::{LearnerError, Result};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};

/// The operations a data-parallel learner needs from its process group.
pub trait Collective: Send {
    /// This process's rank, `0..world_size()`.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn world_size(&self) -> usize;
    /// Element-wise sum of `data` over every rank, written back into `data` on every rank.
    fn all_reduce_sum(&mut self, data: &mut [f32]) -> Result<()>;
}

/// The trivial group of one process.
#[derive(Debug, Default, Clone, Copy)]
pub struct SingleProcess;

impl Collective for SingleProcess {
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        1
    }
    fn all_reduce_sum(&mut self, _data: &mut [f32]) -> Result<()> {
        Ok(())
    }
}

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
                return Err(LearnerError::Remote(format!(
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
    s.write_all(&(data.len() as u64).to_le_bytes())
        .map_err(io)?;
    s.write_all(&bytes).map_err(io)
}

fn recv(s: &mut TcpStream, expected: usize) -> Result<Vec<f32>> {
    let mut len = [0u8; 8];
    s.read_exact(&mut len).map_err(io)?;
    let len = u64::from_le_bytes(len) as usize;
    if len != expected {
        return Err(LearnerError::Remote(format!(
            "all-reduce of {expected} values met a peer sending {len}"
        )));
    }
    let mut bytes = vec![0u8; len * 4];
    s.read_exact(&mut bytes).map_err(io)?;
    Ok(bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
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
}
