//! Benchmarks of one gateway node (being built).
