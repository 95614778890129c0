//! Compiles etcd's v3 API (`proto/etcd`) into a gRPC client with protox, so
//! the etcd store needs no `protoc` on the build machine (the `etcd-client`
//! crate's build script does).

use std::error::Error;

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed=../../proto/etcd");
    let descriptors = protox::compile(["rpc.proto"], ["../../proto/etcd"])?;
    tonic_prost_build::configure()
        .build_server(false)
        .compile_fds(descriptors)?;
    Ok(())
}
