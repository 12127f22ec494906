"""The scoring layer: onnxruntime sessions, the `Predictor`, the local pipeline with resume,
and the Ray engine. Builds on `common` and `formats`."""
