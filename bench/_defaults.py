"""fcls-bench's defaults that its CLI shows in --help (standard library only: --help stays cheap)."""

BATCH_SIZES: tuple[int, ...] = (1, 64, 256, 1024)  # latency (batch 1), then throughput
# fcls-bench --runtime: which of fcls's runtimes run (their peers and scripts follow them)
RUNTIME_CHOICES: tuple[str, ...] = ("all", "onnxruntime", "openvino")
