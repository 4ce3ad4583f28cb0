//! The weights suite's plumbing: a Learner service that streams whichever pre-encoded version
//! it is given (behind the learner's own server builder), a subscriber that receives it as an
//! actor does (or only counts its bytes), and the raw loopback TCP baselines.

use proto::learner_server::{Learner, LearnerServer};
use proto::transport::{Security, Windows};
use proto::weights::{Assembler, HeldWeights, NamedTensor};
use proto::WeightsChunk;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

type ChunkStream = Pin<Box<dyn Stream<Item = Result<WeightsChunk, Status>> + Send>>;

/// A Learner service that only streams the version it holds.
#[derive(Clone, Default)]
pub struct Streamer {
    pub chunks: Arc<Mutex<Arc<Vec<WeightsChunk>>>>,
}

#[tonic::async_trait]
impl Learner for Streamer {
    type PushRolloutsStream = Pin<Box<dyn Stream<Item = Result<proto::PushAck, Status>> + Send>>;
    type SubscribeWeightsStream = ChunkStream;

    async fn push_rollouts(
        &self,
        _: Request<Streaming<proto::RolloutGroup>>,
    ) -> Result<Response<Self::PushRolloutsStream>, Status> {
        Err(Status::unimplemented(
            "the weights benchmark only streams weights",
        ))
    }

    async fn subscribe_weights(
        &self,
        _: Request<proto::SubscribeWeightsRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let chunks = self.chunks.lock().expect("not poisoned").clone();
        let stream = tokio_stream::iter((0..chunks.len()).map(move |i| Ok(chunks[i].clone())));
        Ok(Response::new(Box::pin(stream)))
    }
}

/// Serves `streamer` on a loopback port with the learner's server builder; its URL and the
/// sender that stops it.
pub async fn serve(
    streamer: Streamer,
) -> anyhow::Result<(String, tokio::sync::oneshot::Sender<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let service = LearnerServer::new(streamer).max_encoding_message_size(proto::MAX_MESSAGE_BYTES);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = Security::default().server()?.add_service(service);
    tokio::spawn(server.serve_with_incoming_shutdown(incoming, async {
        let _ = stopped.await;
    }));
    Ok((url, stop))
}

/// What one subscription did.
pub struct Received {
    /// From subscribing to the footer (the tensors built too, when asked).
    pub seconds: f64,
    /// Bytes of chunk data that crossed.
    pub wire_bytes: usize,
    /// The version's tensors as the actor builds them, unless only counting.
    pub tensors: Vec<(String, candle_core::Tensor)>,
}

/// How a subscription treats what arrives.
pub enum Receive<'a> {
    /// Count the bytes, assemble nothing: the transport alone.
    CountOnly,
    /// Assemble (onto these held weights, for a delta) and build candle tensors, as actors do.
    Assemble(Option<&'a dyn HeldWeights>),
}

/// Subscribes at `url` with `windows` and receives one version.
pub async fn receive(url: &str, windows: Windows, how: Receive<'_>) -> anyhow::Result<Received> {
    let started = Instant::now();
    let channel = Security::default()
        .with_windows(windows)
        .channel(url)
        .await?;
    let mut client = proto::learner_client::LearnerClient::new(channel)
        .max_decoding_message_size(proto::MAX_MESSAGE_BYTES);
    let mut stream = client
        .subscribe_weights(proto::SubscribeWeightsRequest::default())
        .await?
        .into_inner();
    let mut asm = Assembler::new();
    let mut wire_bytes = 0;
    while let Some(chunk) = stream.message().await? {
        let footer = matches!(chunk.part, Some(proto::weights_chunk::Part::Footer(_)));
        if let Some(proto::weights_chunk::Part::Tensor(t)) = &chunk.part {
            wire_bytes += t.data.len();
        }
        match &how {
            Receive::CountOnly if footer => {
                return Ok(Received {
                    seconds: started.elapsed().as_secs_f64(),
                    wire_bytes,
                    tensors: Vec::new(),
                })
            }
            Receive::CountOnly => {}
            Receive::Assemble(held) => {
                if let Some((_, tensors)) = asm.push_onto(chunk, *held)? {
                    let tensors = build_tensors(tensors)?;
                    return Ok(Received {
                        seconds: started.elapsed().as_secs_f64(),
                        wire_bytes,
                        tensors,
                    });
                }
            }
        }
    }
    anyhow::bail!("the stream ended before the version's footer")
}

/// The candle tensors of assembled weights, as the actor builds them.
pub fn build_tensors(
    tensors: Vec<NamedTensor>,
) -> anyhow::Result<Vec<(String, candle_core::Tensor)>> {
    tensors
        .into_iter()
        .map(|t| {
            let tensor = candle_core::Tensor::from_vec(t.data, t.shape, &candle_core::Device::Cpu)?;
            Ok((t.name, tensor))
        })
        .collect()
}

/// Where a raw receiver puts the bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum RawInto {
    /// One `chunk`-sized buffer, read into again and again: the bytes are dropped, and the
    /// buffer stays in the cache.
    Reused,
    /// One buffer of all `total` bytes, mapped and written once before the transfer starts
    /// (as a receiver that reuses its buffers holds them): the least any receiver that
    /// keeps a version does.
    Kept,
}

/// Seconds to receive `total` bytes written in `chunk`-sized pieces over a raw socket.
pub async fn raw_once(total: usize, chunk: usize, into: RawInto) -> anyhow::Result<f64> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let sender = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await?;
        socket.set_nodelay(true)?;
        let buf = vec![0xA5u8; chunk];
        let mut left = total;
        while left > 0 {
            let n = left.min(chunk);
            socket.write_all(&buf[..n]).await?;
            left -= n;
        }
        socket.shutdown().await?;
        Ok::<_, std::io::Error>(())
    });
    let mut kept = Vec::new();
    if into == RawInto::Kept {
        // Room past the end, so that the read that finds the end of the stream does not
        // grow (copy) the buffer.
        kept.resize(total + 4096, 0u8);
        kept.clear();
    }
    let started = Instant::now();
    let mut socket = tokio::net::TcpStream::connect(addr).await?;
    socket.set_nodelay(true)?;
    let mut got = 0;
    if into == RawInto::Reused {
        let mut buf = vec![0u8; chunk];
        loop {
            let n = socket.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            got += n;
        }
    } else {
        while socket.read_buf(&mut kept).await? > 0 {}
        got = kept.len();
    }
    let took = started.elapsed().as_secs_f64();
    sender.await??;
    anyhow::ensure!(got == total, "raw socket received {got} of {total} bytes");
    Ok(took)
}
