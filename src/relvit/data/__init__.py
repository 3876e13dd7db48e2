"""Datasets, splits, loaders and the on-device batch pipeline."""
