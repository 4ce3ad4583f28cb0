//! Compiles `oxrl.proto` with protox (pure Rust): no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=oxrl.proto");
    let fds = protox::compile(["oxrl.proto"], ["."])?;
    tonic_prost_build::configure()
        // Weight chunks are slices of one buffer per tensor on the learner and views of the
        // received frames on the actor: no copy per chunk in protobuf.
        .bytes(".oxrl.v1.TensorChunk.data")
        .compile_fds(fds)?;
    Ok(())
}
