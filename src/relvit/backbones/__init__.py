"""Encoders that turn images into a grid of patch tokens."""
