"""Judging frozen features: extraction, weighted kNN, linear evaluation, the online probe."""
