"""HTTP layer: thin routes over the inference core."""
