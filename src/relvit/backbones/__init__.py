"""Encoders that turn images into a grid of patch tokens: the TokenBackbone contract, ViT, Swin,
T2T-ViT, and the registry of every variant's sizes.

May import: relvit.errors
"""
