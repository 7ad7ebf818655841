//! Address policy against SSRF (written by the client work).
