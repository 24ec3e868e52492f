"""Defaults chosen by measurement (see benchmarks/), in a module light enough for --help."""

# Blobs fetched at once. On 2 cores against a loopback registry, 4 keeps both cores
# busy through the slow start of small layers; more only adds memory.
DEFAULT_PARALLEL = 4
