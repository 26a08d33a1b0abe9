"""Benchmarks: `python -m benchmarks.<name> [--quick]`, each comparing Bulwark with a peer in the same run."""
