"""Delta bundles: a bundle that leaves out the layer blobs an earlier one (its base) carried."""
