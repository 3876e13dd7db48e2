"""What a trained run is turned into: a checkpoint evaluated with the config it was trained with, the kNN
report of a two-phase run, the RelViT vs scratch comparison, sweep summaries, pictures and their
figures, and the backbone exported for timm.

May import: relvit.errors, relvit.runs, relvit.backbones, relvit.data, relvit.probes, relvit.model,
relvit.config, relvit.training
"""
