"""Scale-out: `mirror --shard I/N` (a deterministic share of a plan's blobs) and `merge` (shard
outputs, merged directories and bundles combined into one, every blob verified on the way)."""
