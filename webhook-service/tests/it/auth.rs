//! auth API tests (filled in by the auth work).
