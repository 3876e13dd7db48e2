"""RelViT: self-supervised Vision Transformers that learn where patches lie."""

__version__ = "0.1.0"
