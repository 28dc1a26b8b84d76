//! Compiles every `.proto` under `proto/` with the pure-Rust `protox`, so a fresh machine
//! needs nothing beyond cargo (no `protoc`), and hands the descriptors to tonic's generator.

use prost::Message;
use std::{env, fs, path::PathBuf};

const PROTOS: &[&str] = &[
    "proto/microchat/auth/v1/auth.proto",
    "proto/microchat/chat/v1/chat.proto",
    "proto/microchat/events/v1/events.proto",
    "proto/microchat/logger/v1/logger.proto",
    "proto/microchat/mail/v1/mail.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(PROTOS, ["proto"])?;
    // Kept for gRPC server reflection (grpcurl lists and calls the services with it).
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("microchat_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        // File chunks pass through the broker and chat without a copy.
        .bytes(".microchat.chat.v1.UploadChunk.data")
        .bytes(".microchat.chat.v1.AttachmentChunk.data")
        .compile_fds(descriptors)?;
    Ok(())
}
