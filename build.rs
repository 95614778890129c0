//! Compiles everything under `proto/` with protox (pure Rust, so no `protoc`
//! on the build machine) and writes the encoded descriptor set that server
//! reflection serves.

use std::{env, error::Error, fs, path::PathBuf};

use prost::Message;

const PROTOS: &[&str] = &[
    "proto/authmesh/v1/token_service.proto",
    "proto/authmesh/v1/workload_admin.proto",
    "proto/demo/inventory/v1/inventory.proto",
    "proto/demo/orders/v1/orders.proto",
];

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(PROTOS, ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("authmesh_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
