//! The service's two faces: gRPC ([`grpc`]) and HTTP ([`http`], with the vendor shapes in
//! [`vendors`]). They translate wire types to domain types and back; logic lives below them.

pub mod a1111;
pub mod convert;
pub mod grpc;
pub mod http;
pub mod validate;
pub mod vendors;
