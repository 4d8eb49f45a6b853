"""Load generator and benchmarks (see bench/README.md); never part of production URLs."""
