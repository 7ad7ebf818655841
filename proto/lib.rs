//! sdserve's gRPC contract, package `sdserve.v1`, generated from `proto/sdserve/v1/*.proto`.
//!
//! Both services and their clients depend on this crate so that they agree on one contract.
//! [`FILE_DESCRIPTOR_SET`] feeds the gRPC reflection service, which is what lets
//! `grpcurl -plaintext HOST:PORT list` work without the .proto files.

/// Messages and services of package `sdserve.v1`.
pub mod v1 {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("sdserve.v1");
}

/// Encoded `FileDescriptorSet` of every sdserve .proto file, for tonic-reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("sdserve_descriptor");
