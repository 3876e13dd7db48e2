"""Datasets, splits, loaders and the on-device batch pipeline: one data module for every dataset
(sources/), its augmentation, checks of the image files and downloads. Data shards per DDP rank and
the progress of long steps are the run's (relvit.runs).

May import: relvit.errors, relvit.runs
"""
