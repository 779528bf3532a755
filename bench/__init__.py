"""Benchmarks of the PacBook warehouse (run with the project root on PYTHONPATH; see bench/README.md)."""
