//! Standard Webhooks signing (written by the client work).
