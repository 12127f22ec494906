"""fcls-bench's defaults that its CLI shows in --help (standard library only: --help stays cheap)."""

BATCH_SIZES: tuple[int, ...] = (1, 64, 256, 1024)  # latency (batch 1), then throughput
