"""Judging frozen features: extraction, weighted kNN, linear evaluation, the kNN monitor and the online
probe of upstream runs (rows gathered across DDP ranks by relvit.runs).

May import: relvit.errors, relvit.runs, relvit.backbones
"""
