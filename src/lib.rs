//! Generated protobuf and gRPC code for the AuthMesh API (`authmesh.v1`) and
//! the demo services (`demo.orders.v1`, `demo.inventory.v1`), plus the
//! encoded descriptor set that server reflection serves so grpcurl needs no
//! proto files.
#![allow(missing_docs)] // generated code carries the proto comments, not rustdoc on every item

/// `authmesh.*` packages.
pub mod authmesh {
    /// The token service API, version 1.
    pub mod v1 {
        tonic::include_proto!("authmesh.v1");
    }
}

/// The demo services that show the whole flow.
pub mod demo {
    /// SERVER2: inventory.
    pub mod inventory {
        /// Version 1.
        pub mod v1 {
            tonic::include_proto!("demo.inventory.v1");
        }
    }
    /// SERVER1: orders.
    pub mod orders {
        /// Version 1.
        pub mod v1 {
            tonic::include_proto!("demo.orders.v1");
        }
    }
}

/// Encoded `FileDescriptorSet` of every proto in this crate, for reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/authmesh_descriptor.bin"));
