//! Deterministic tiny SD-shaped models with random weights, written in both layouts for tests.
