"""Inference core shared by the service and by training's evaluation (no web imports)."""
