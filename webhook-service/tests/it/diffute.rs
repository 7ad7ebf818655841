//! diffute API tests (filled in by the diffute work).
