//! Weights suite: one version of a model's weights streamed the way actors receive them
//! (gRPC server stream of `WeightsChunk`s, CRC-checked and assembled into candle tensors)
//! against the baseline of the same number of bytes over a raw loopback TCP socket in the
//! same chunk sizes, measured in the same invocation; then where the time goes (encode, CRC,
//! transfer, decode, tensors), and each `[pipeline] weight_sync` mode's bytes and seconds per
//! version, its delta taken against the version before (an AdamW-sized step from it).
//!
//! The server streams pre-encoded chunks, as the learner does (it encodes a version once and
//! shares it among subscribers), so the transfer figures are the transport and the receiving
//! codec; encoding is its own stage.

use super::weights_wire::{build_tensors, raw_once, receive, serve, RawInto, Receive, Streamer};
use anyhow::Context;
use proto::transport::Windows;
use proto::weights::{encode_as, Assembler, Delta, HeldWeights, NamedTensor, WireDtype};
use rollout::config::WeightSync;
use std::sync::Arc;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// Also stream a ~19 M parameter config (76 MB of fp32).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    large: bool,
    /// Repetitions per measurement (the best is kept).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// The size of each weight's move between the two versions a delta spans (AdamW's
    /// first steps move every weight by about the learning rate).
    #[arg(long, default_value_t = 1e-5)]
    step: f32,
}

/// Weights a subscriber holds (the version a delta is taken against).
struct Held {
    tensors: Vec<NamedTensor>,
}

impl HeldWeights for Held {
    fn version(&self) -> u64 {
        1
    }
    fn lineage(&self) -> u64 {
        1
    }
    fn tensor(&self, name: &str) -> Option<Vec<f32>> {
        let t = self.tensors.iter().find(|t| t.name == name)?;
        Some(t.data.clone())
    }
}

/// The smallest of `reps` runs of `f`, in seconds.
fn best<T>(
    reps: usize,
    mut f: impl FnMut() -> anyhow::Result<(f64, T)>,
) -> anyhow::Result<(f64, T)> {
    let mut out = f()?;
    for _ in 1..reps {
        let next = f()?;
        if next.0 < out.0 {
            out = next;
        }
    }
    Ok(out)
}

fn timed<T>(f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<(f64, T)> {
    let started = Instant::now();
    let out = f()?;
    Ok((started.elapsed().as_secs_f64(), out))
}

/// A model's weights, sorted by name as the learner sends them.
fn named(m: &policy::ModelDir) -> anyhow::Result<Vec<NamedTensor>> {
    let mut tensors = Vec::new();
    for (name, t) in m.weights.iter() {
        tensors.push(NamedTensor {
            name: name.clone(),
            shape: t.dims().to_vec(),
            data: t.flatten_all()?.to_vec1::<f32>()?,
        });
    }
    tensors.sort_by(|x, y| x.name.cmp(&y.name));
    Ok(tensors)
}

/// The version after `base`: every weight moved by `step`, up or down (a fixed pattern).
fn stepped(base: &[NamedTensor], step: f32) -> Vec<NamedTensor> {
    base.iter()
        .map(|t| NamedTensor {
            data: t
                .data
                .iter()
                .enumerate()
                .map(|(i, x)| {
                    let up = (i as u32).wrapping_mul(2654435761) >> 31 == 1;
                    x + if up { step } else { -step }
                })
                .collect(),
            ..t.clone()
        })
        .collect()
}

/// What a subscriber holds of `tensors` under `dtype`.
fn as_held(tensors: &[NamedTensor], dtype: WireDtype) -> Held {
    Held {
        tensors: tensors
            .iter()
            .map(|t| NamedTensor {
                data: t.data.iter().map(|&x| dtype.round(x)).collect(),
                ..t.clone()
            })
            .collect(),
    }
}

/// Checks that `got` is `sent` as `mode` promises it (bit for bit after rounding).
fn check(
    mode: WeightSync,
    sent: &[NamedTensor],
    got: &[(String, candle_core::Tensor)],
) -> anyhow::Result<()> {
    anyhow::ensure!(
        got.len() == sent.len(),
        "{} tensors of {}",
        got.len(),
        sent.len()
    );
    for ((name, t), s) in got.iter().zip(sent) {
        let data = t.flatten_all()?.to_vec1::<f32>()?;
        let exact = data
            .iter()
            .zip(&s.data)
            .all(|(&y, &x)| y.to_bits() == mode.dtype().round(x).to_bits());
        anyhow::ensure!(exact, "{}: tensor {name} is not what was sent", mode.name());
    }
    Ok(())
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let models = super::bench_models(a.large)?;
    let pb = crate::progress::bar(models.len() as u64, "weights");
    let mut rows = Vec::new();
    let mut printed = Vec::new();
    for (name, m) in models {
        pb.set_message(name.clone());
        let tensors = named(&m)?;
        let streamer = Streamer::default();
        let (transport, stages, modes) = rt.block_on(async {
            let (url, stop) = serve(streamer.clone()).await?;
            let t = transport(&a, &url, &streamer, &tensors).await?;
            let s = stages(&a, &url, &streamer, &tensors).await?;
            let m = modes(&a, &url, &streamer, &tensors).await?;
            let _ = stop.send(());
            Ok::<_, anyhow::Error>((t, s, m))
        })?;
        printed.push((
            name.clone(),
            transport.clone(),
            stages.clone(),
            modes.clone(),
        ));
        rows.push(serde_json::json!({
            "model": name, "params": m.config.num_parameters(),
            "transport": transport, "stages": stages, "modes": modes,
        }));
        pb.inc(1);
    }
    pb.finish_and_clear();
    super::weights_report::print(a.reps, &printed);
    println!("{}", serde_json::json!({"suite": "weights", "rows": rows}));
    Ok(())
}

/// Full fp32 over raw TCP (bytes dropped, and bytes kept), over gRPC with h2's default
/// windows, and with oxrl's.
async fn transport(
    a: &Args,
    url: &str,
    streamer: &Streamer,
    tensors: &[NamedTensor],
) -> anyhow::Result<serde_json::Value> {
    let chunks = encode_as(
        1,
        1,
        tensors,
        WireDtype::F32,
        None,
        proto::WEIGHTS_CHUNK_BYTES,
    )?;
    *streamer.chunks.lock().expect("not poisoned") = Arc::new(chunks);
    let bytes: usize = tensors.iter().map(|t| t.data.len() * 4).sum();
    let (mut raw, mut kept, mut h2, mut tuned) =
        (f64::INFINITY, f64::INFINITY, f64::INFINITY, f64::INFINITY);
    for _ in 0..a.reps.max(1) {
        raw = raw.min(raw_once(bytes, proto::WEIGHTS_CHUNK_BYTES, RawInto::Reused).await?);
        kept = kept.min(raw_once(bytes, proto::WEIGHTS_CHUNK_BYTES, RawInto::Kept).await?);
        for (windows, best) in [
            (Windows::H2_DEFAULTS, &mut h2),
            (Windows::default(), &mut tuned),
        ] {
            let got = receive(url, windows, Receive::Assemble(None))
                .await
                .context("gRPC weights")?;
            check(WeightSync::Full, tensors, &got.tensors)?;
            *best = best.min(got.seconds);
        }
    }
    Ok(serde_json::json!({
        "bytes": bytes, "raw_tcp_s": raw, "raw_tcp_kept_s": kept,
        "grpc_h2_default_windows_s": h2, "grpc_s": tuned,
        "grpc_over_raw": raw / tuned, "grpc_h2_default_windows_over_raw": raw / h2,
        "kept_over_raw": raw / kept, "grpc_over_kept": kept / tuned,
    }))
}

/// Full fp32 stage by stage: encode (CRC included), the CRC alone, the transfer alone (bytes
/// counted, nothing assembled), decode (assembly from chunks in memory, CRC included), and
/// building the candle tensors.
async fn stages(
    a: &Args,
    url: &str,
    streamer: &Streamer,
    tensors: &[NamedTensor],
) -> anyhow::Result<serde_json::Value> {
    let reps = a.reps.max(1);
    let chunk = proto::WEIGHTS_CHUNK_BYTES;
    let (encode_s, chunks) = best(reps, || {
        timed(|| Ok(encode_as(1, 1, tensors, WireDtype::F32, None, chunk)?))
    })?;
    let datas: Vec<&[u8]> = chunks
        .iter()
        .filter_map(|c| match &c.part {
            Some(proto::weights_chunk::Part::Tensor(t)) => Some(&t.data[..]),
            _ => None,
        })
        .collect();
    let (crc_s, _) = best(reps, || {
        timed(|| {
            Ok(datas
                .iter()
                .map(|d| crc32fast::hash(d))
                .fold(0, |a, b| a ^ b))
        })
    })?;
    let (decode_s, _) = best(reps, || {
        let owned = chunks.clone();
        timed(|| {
            let mut asm = Assembler::new();
            let mut out = None;
            for c in owned {
                out = asm.push(c)?.or(out);
            }
            out.context("no footer")
        })
    })?;
    let mut tensors_s = f64::INFINITY;
    for _ in 0..reps {
        let owned = tensors.to_vec();
        tensors_s = tensors_s.min(timed(|| build_tensors(owned))?.0);
    }
    *streamer.chunks.lock().expect("not poisoned") = Arc::new(chunks);
    let mut transfer_s = f64::INFINITY;
    for _ in 0..reps {
        let got = receive(url, Windows::default(), Receive::CountOnly).await?;
        transfer_s = transfer_s.min(got.seconds);
    }
    Ok(serde_json::json!({
        "encode_s": encode_s, "crc_s": crc_s, "transfer_s": transfer_s,
        "decode_s": decode_s, "tensors_s": tensors_s,
    }))
}

/// Each weight-sync mode: bytes on the wire, encode and receive seconds per version (a delta
/// against the version before, which the subscriber holds).
async fn modes(
    a: &Args,
    url: &str,
    streamer: &Streamer,
    tensors: &[NamedTensor],
) -> anyhow::Result<serde_json::Value> {
    let next = stepped(tensors, a.step);
    let mut out = Vec::new();
    for mode in WeightSync::ALL {
        let held = as_held(tensors, mode.dtype());
        let delta = mode.delta().then_some(Delta {
            base_version: 1,
            base: tensors,
        });
        let (encode_s, chunks) = best(a.reps.max(1), || {
            timed(|| {
                Ok(encode_as(
                    2,
                    1,
                    &next,
                    mode.dtype(),
                    delta,
                    proto::WEIGHTS_CHUNK_BYTES,
                )?)
            })
        })?;
        *streamer.chunks.lock().expect("not poisoned") = Arc::new(chunks);
        let mut seconds = f64::INFINITY;
        let mut wire_bytes = 0;
        for _ in 0..a.reps.max(1) {
            let got = receive(url, Windows::default(), Receive::Assemble(Some(&held))).await?;
            check(mode, &next, &got.tensors)?;
            seconds = seconds.min(got.seconds);
            wire_bytes = got.wire_bytes;
        }
        out.push(serde_json::json!({
            "mode": mode.name(), "wire_bytes": wire_bytes, "encode_s": encode_s,
            "receive_s": seconds,
        }));
    }
    Ok(serde_json::Value::Array(out))
}
