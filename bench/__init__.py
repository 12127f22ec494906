"""fcls.bench: latency, throughput and end-to-end benchmarks against the notebook's way."""
