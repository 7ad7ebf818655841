//! leonardo API tests (filled in by the leonardo work).
