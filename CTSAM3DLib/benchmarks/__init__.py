"""Benchmarks that print numbers: latency, memory and training throughput (``ctsam3d benchmark``)."""
