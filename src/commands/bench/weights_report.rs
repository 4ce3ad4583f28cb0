//! The weights suite's tables: transport against raw TCP, the stages of one full version,
//! and the weight-sync modes.

use serde_json::Value;

/// One model's figures: name, transport, stages, modes (as the suite's JSON has them).
pub type ModelFigures = (String, Value, Value, Value);

fn f(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or(f64::NAN)
}

/// Prints the three tables.
pub fn print(reps: usize, rows: &[ModelFigures]) {
    println!(
        "weights: one fp32 version over gRPC (chunks of {} KiB, CRC-checked, assembled into tensors) vs the same bytes over raw loopback TCP; best of {reps}",
        proto::WEIGHTS_CHUNK_BYTES / 1024
    );
    println!(
        "{:<8} {:>7} {:>10} {:>17} {:>9} {:>12} {:>9}",
        "model", "MB", "raw MB/s", "h2-default MB/s", "/raw", "gRPC MB/s", "/raw"
    );
    for (name, t, _, _) in rows {
        let mb = f(t, "bytes") / 1e6;
        println!(
            "{:<8} {:>7.1} {:>10.0} {:>17.0} {:>8.2}x {:>12.0} {:>8.2}x",
            name,
            mb,
            mb / f(t, "raw_tcp_s"),
            mb / f(t, "grpc_h2_default_windows_s"),
            f(t, "grpc_h2_default_windows_over_raw"),
            mb / f(t, "grpc_s"),
            f(t, "grpc_over_raw"),
        );
    }
    println!("\nthe least a receiver that keeps the bytes does: raw TCP into one buffer of the whole version");
    println!(
        "{:<8} {:>7} {:>10} {:>15} {:>9} {:>14}",
        "model", "MB", "raw MB/s", "raw kept MB/s", "/raw", "gRPC / kept"
    );
    for (name, t, _, _) in rows {
        let mb = f(t, "bytes") / 1e6;
        println!(
            "{:<8} {:>7.1} {:>10.0} {:>15.0} {:>8.2}x {:>13.2}x",
            name,
            mb,
            mb / f(t, "raw_tcp_s"),
            mb / f(t, "raw_tcp_kept_s"),
            f(t, "kept_over_raw"),
            f(t, "grpc_over_kept"),
        );
    }
    println!(
        "\nstages of one full fp32 version, ms (transfer: gRPC, bytes counted, nothing assembled)"
    );
    println!(
        "{:<8} {:>9} {:>7} {:>10} {:>9} {:>9} {:>10}",
        "model", "encode", "(crc)", "transfer", "decode", "tensors", "raw TCP"
    );
    for (name, t, s, _) in rows {
        println!(
            "{:<8} {:>9.1} {:>7.1} {:>10.1} {:>9.1} {:>9.2} {:>10.1}",
            name,
            f(s, "encode_s") * 1e3,
            f(s, "crc_s") * 1e3,
            f(s, "transfer_s") * 1e3,
            f(s, "decode_s") * 1e3,
            f(s, "tensors_s") * 1e3,
            f(t, "raw_tcp_s") * 1e3,
        );
    }
    println!("\nweight_sync modes: one version (a delta against the one before), received and assembled as actors do");
    println!(
        "{:<8} {:<11} {:>10} {:>8} {:>10} {:>11} {:>14}",
        "model", "mode", "MB", "/full", "encode ms", "receive ms", "receive /full"
    );
    for (name, _, _, modes) in rows {
        let modes = modes.as_array().cloned().unwrap_or_default();
        let full = modes.first().cloned().unwrap_or(Value::Null);
        for m in &modes {
            println!(
                "{:<8} {:<11} {:>10.2} {:>7.2}x {:>10.1} {:>11.1} {:>13.2}x",
                name,
                m["mode"].as_str().unwrap_or("?"),
                f(m, "wire_bytes") / 1e6,
                f(m, "wire_bytes") / f(&full, "wire_bytes"),
                f(m, "encode_s") * 1e3,
                f(m, "receive_s") * 1e3,
                f(m, "receive_s") / f(&full, "receive_s"),
            );
        }
    }
}
