"""The base layer: errors, the data spec, atomic output, system facts, optional extras and
model-file sniffing. Imports nothing else of fcls; the other layers build on it."""
