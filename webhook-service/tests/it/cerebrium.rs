//! cerebrium API tests (filled in by the cerebrium work).
