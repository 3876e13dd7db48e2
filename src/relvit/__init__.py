"""RelViT: self-supervised Vision Transformers that learn where patches lie.

A config flows downward: train.py and evaluate.py -> relvit.cli -> relvit.training -> relvit.model,
relvit.data, ... Each package's docstring says what it holds and the packages it may import (its
"May import:" line; tests/test_layout.py holds the code to it), so no package imports one above it.
The modules beside the packages are the entry points (cli.py, and the thin modules behind
``python -m relvit.export|summary|visualize|comparison``), which may import any package, and
errors.py, the exceptions every package raises, which imports none.
"""
from omegaconf import OmegaConf

__version__ = "0.1.0"


def _backbone_size(name: str, key: str) -> object:
    # imported on first use: the registry imports torch and timm, which ``import relvit`` should not
    from relvit.backbones.registry import backbone_size

    value = backbone_size(name, key)
    # a list node, like one written in the YAML file (OmegaConf.is_list holds for it)
    return OmegaConf.create(value) if isinstance(value, list) else value


# conf/backbone/*.yaml read their sizes from the registry: ${backbone_size:<name>,<key>}
OmegaConf.register_new_resolver("backbone_size", _backbone_size, replace=True)


def _precision(accelerator: object = "auto", mixed: object = True) -> str:
    from relvit.model.hardware import resolve_precision

    return resolve_precision(accelerator, mixed=bool(mixed))


# conf/trainer/default.yaml: trainer.precision follows the hardware unless set
OmegaConf.register_new_resolver("relvit_precision", _precision, replace=True)
