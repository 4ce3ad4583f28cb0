//! Weights suite: one version of a model's weights streamed the way actors receive them
//! (gRPC server stream of `WeightsChunk`s, CRC-checked and reassembled into tensors by
//! `proto::weights::Assembler`) against the baseline of the same number of bytes over a raw
//! loopback TCP socket in the same chunk sizes, measured in the same invocation.
//!
//! The server here streams pre-encoded chunks, as the learner does (it encodes a version once
//! and shares it among subscribers), so the figure is the transport and codec cost, not the
//! learner's encoding.

use anyhow::Context;
use proto::learner_server::{Learner, LearnerServer};
use proto::weights::{encode, Assembler, NamedTensor};
use proto::WeightsChunk;
use std::pin::Pin;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

#[derive(clap::Args)]
pub struct Args {
    /// Also stream a ~19 M parameter config (76 MB of fp32).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    large: bool,
    /// Repetitions per measurement (the best is kept).
    #[arg(long, default_value_t = 3)]
    reps: usize,
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<WeightsChunk, Status>> + Send>>;

/// A Learner service that only streams one pre-encoded version.
struct Streamer {
    chunks: Arc<Vec<WeightsChunk>>,
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
        let chunks = self.chunks.clone();
        let stream = tokio_stream::iter((0..chunks.len()).map(move |i| Ok(chunks[i].clone())));
        Ok(Response::new(Box::pin(stream)))
    }
}

/// Seconds to receive and reassemble one version over gRPC.
async fn grpc_once(url: &str, bytes: usize) -> anyhow::Result<f64> {
    let started = std::time::Instant::now();
    let mut client = proto::learner_client::LearnerClient::connect(url.to_string())
        .await?
        .max_decoding_message_size(proto::MAX_MESSAGE_BYTES);
    let mut stream = client
        .subscribe_weights(proto::SubscribeWeightsRequest::default())
        .await?
        .into_inner();
    let mut asm = Assembler::new();
    while let Some(chunk) = stream.message().await? {
        if let Some((_, tensors)) = asm.push(chunk)? {
            let got: usize = tensors.iter().map(|t| t.data.len() * 4).sum();
            anyhow::ensure!(
                got == bytes,
                "received {got} bytes of weights, sent {bytes}"
            );
            return Ok(started.elapsed().as_secs_f64());
        }
    }
    anyhow::bail!("the stream ended before the version's footer")
}

/// Seconds to receive `total` bytes written in `chunk`-sized pieces over a raw socket.
async fn raw_once(total: usize, chunk: usize) -> anyhow::Result<f64> {
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
    let started = std::time::Instant::now();
    let mut socket = tokio::net::TcpStream::connect(addr).await?;
    socket.set_nodelay(true)?;
    let mut buf = vec![0u8; chunk];
    let mut got = 0;
    loop {
        let n = socket.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        got += n;
    }
    let took = started.elapsed().as_secs_f64();
    sender.await??;
    anyhow::ensure!(got == total, "raw socket received {got} of {total} bytes");
    Ok(took)
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    println!(
        "weights: one version over gRPC (chunks of {} KiB, CRC-checked, reassembled) vs the same bytes over raw loopback TCP; best of {}",
        proto::WEIGHTS_CHUNK_BYTES / 1024,
        a.reps
    );
    println!(
        "{:<10} {:>9} {:>8} {:>12} {:>12} {:>9}",
        "model", "params", "MB", "gRPC MB/s", "raw MB/s", "gRPC/raw"
    );
    let models = super::bench_models(a.large)?;
    let pb = crate::progress::bar(models.len() as u64, "weights");
    let mut rows = Vec::new();
    for (name, m) in models {
        pb.set_message(name.clone());
        let mut tensors = Vec::new();
        for (tname, t) in m.weights.iter() {
            tensors.push(NamedTensor {
                name: tname.clone(),
                shape: t.dims().to_vec(),
                data: t.flatten_all()?.to_vec1::<f32>()?,
            });
        }
        tensors.sort_by(|x, y| x.name.cmp(&y.name));
        let bytes: usize = tensors.iter().map(|t| t.data.len() * 4).sum();
        let chunks = Arc::new(encode(1, 0, &tensors, proto::WEIGHTS_CHUNK_BYTES));
        let (grpc_s, raw_s) = rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let url = format!("http://{}", listener.local_addr()?);
            let incoming =
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            let service = LearnerServer::new(Streamer { chunks })
                .max_encoding_message_size(proto::MAX_MESSAGE_BYTES);
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let server = tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(service)
                    .serve_with_incoming_shutdown(incoming, async {
                        let _ = stopped.await;
                    }),
            );
            let mut grpc = f64::INFINITY;
            let mut raw = f64::INFINITY;
            for _ in 0..a.reps.max(1) {
                grpc = grpc.min(grpc_once(&url, bytes).await.context("gRPC weights")?);
                raw = raw.min(raw_once(bytes, proto::WEIGHTS_CHUNK_BYTES).await?);
            }
            let _ = stop.send(());
            server.await??;
            Ok::<_, anyhow::Error>((grpc, raw))
        })?;
        let mb = bytes as f64 / 1e6;
        let row = serde_json::json!({
            "model": name, "params": m.config.num_parameters(), "bytes": bytes,
            "grpc_mb_s": mb / grpc_s, "raw_tcp_mb_s": mb / raw_s, "grpc_over_raw": raw_s / grpc_s,
            "grpc_s": grpc_s, "raw_tcp_s": raw_s,
        });
        pb.suspend(|| {
            println!(
                "{:<10} {:>8.1}M {:>8.1} {:>12.0} {:>12.0} {:>8.2}x",
                name,
                m.config.num_parameters() as f64 / 1e6,
                mb,
                mb / grpc_s,
                mb / raw_s,
                raw_s / grpc_s
            )
        });
        rows.push(row);
        pb.inc(1);
    }
    pb.finish_and_clear();
    println!("{}", serde_json::json!({"suite": "weights", "rows": rows}));
    Ok(())
}
