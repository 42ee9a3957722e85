"""Shared infrastructure: configuration, run directories, checkpoints, data, runtime helpers."""
