//! The guarded webhook HTTP client (written by the client work).
