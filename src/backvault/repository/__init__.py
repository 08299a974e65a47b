"""The repository format: chunks, blobs, packs, index, trees, snapshots, check."""
