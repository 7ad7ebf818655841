//! runpod API tests (filled in by the runpod work).
