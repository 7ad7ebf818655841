//! Compiles `proto/sdserve/v1/*.proto` into Rust with tonic-prost-build.
//!
//! protoc is not needed: `protox` (a pure-Rust protobuf compiler) parses the files into a
//! file descriptor set, which is handed to tonic-prost-build and also written out for the
//! gRPC reflection service.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/sdserve/v1/common.proto",
        "proto/sdserve/v1/inference.proto",
        "proto/sdserve/v1/jobs.proto",
    ];
    for file in &files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let set_path = out_dir.join("sdserve_descriptor.bin");
    std::fs::write(&set_path, prost::Message::encode_to_vec(&descriptors))?;
    tonic_prost_build::configure()
        .file_descriptor_set_path(&set_path)
        .skip_protoc_run()
        .compile_fds(descriptors)?;
    Ok(())
}
