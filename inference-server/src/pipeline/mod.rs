//! The generation pipeline: turns a request (prompt, negative prompt, settings) into the
//! inputs of the networks. So far: A1111 prompt emphasis and long-prompt chunking.

pub mod prompt;
