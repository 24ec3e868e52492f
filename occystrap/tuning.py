"""Defaults chosen by measurement (see benchmarks/), in a module light enough for --help."""

import os

# Blobs fetched at once. On 2 cores against a loopback registry, 4 keeps both cores
# busy through the slow start of small layers; more only adds memory.
DEFAULT_PARALLEL = 4

# Blobs `verify` re-hashes at once: hashing and inflating release the GIL, one per core.
DEFAULT_VERIFY_WORKERS = max(1, min(4, os.cpu_count() or 1))
