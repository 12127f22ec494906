"""The format layer: fcls data in CSV (grammar, fast path, reader), Parquet, Arrow IPC and
folders of images, the one input dispatcher (`sources.open_chunks`), the -o rule and the
results format. Builds on `common` only."""
