"""Forensics over an image's layers: what each layer did to each path, how two images differ,
where a path or a string lives, and the flattened root filesystem (as a tar stream or as an
OCI runtime bundle).

Everything here reads layers through one small contract (`layers.OpenLayer`: a layer's plain
tar bytes, verified against its digest and diff_id while they stream), so the same code
serves stored blobs and network sources alike. Nothing here holds file contents in memory:
only path metadata is kept, and contents are streamed (hashed, searched or copied) once.
"""
