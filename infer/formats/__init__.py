"""The format layer: fcls data in CSV (grammar, fast path, reader), Parquet and Arrow IPC,
the one input dispatcher (`sources.open_chunks`), the -o rule and the results format.
Builds on `common` only."""
