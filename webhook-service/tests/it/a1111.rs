//! a1111 API tests (filled in by the a1111 work).
