"""The one check of a composed config, run by the entry points before any work starts."""
from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from relvit.config.schema_types import check_schema
from relvit.errors import ConfigError
from relvit.model.task import TaskSpec
from relvit.runs.checkpoints import EXPORTED_WEIGHTS, WEIGHT_SUFFIXES, weight_file
from relvit.runs.trackers import check_trackers


def _require(ok: bool, key: str, value: Any, valid: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is invalid: {valid}")


def require_values(cfg: DictConfig) -> None:
    """Refuse a config in which a mandatory value (``???``) was left unset."""
    missing = sorted(k for k in OmegaConf.missing_keys(cfg) if not k.startswith("hydra"))
    if missing:
        hint = " (the upstream checkpoint to start from)" if "pretrained" in missing else ""
        raise ConfigError(f"{missing[0]} has no value{hint}: pass {missing[0]}=<value> on the command line")


def check_config(cfg: DictConfig, entry: str = "train") -> TaskSpec:
    """The one check of a composed config, before any work: no value left unset, every key declared in
    the schema of ``entry`` (relvit.config.schema) with a value of its type and range, then the rules
    that tie keys together. Raises ConfigError naming the key, the value and what is valid; returns
    the parsed task node."""
    from relvit.config.schema import REQUIRED_GROUPS, SCHEMAS

    require_values(cfg)
    resolved = _resolved(cfg)
    check_schema(resolved, SCHEMAS[entry])
    for group in REQUIRED_GROUPS:
        _require(isinstance(resolved.get(group), dict), group, resolved.get(group), f"a node of keys, one of conf/{group}/")
    _check_sizes(resolved)
    _check_data(resolved["data"], resolved["dataset"])
    _check_files(resolved)
    _check_hardware(resolved)
    check_trackers(resolved.get("logger") or {})
    try:
        return TaskSpec.from_config(resolved["task"])
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"task: {err}") from None


def _resolved(cfg: DictConfig) -> dict[str, Any]:
    try:
        resolved = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as err:
        reason = str(err).strip().splitlines()[0]
        raise ConfigError(f"{getattr(err, 'full_key', None) or 'the config'} cannot be resolved: {reason}") from None
    resolved = cast(dict[str, Any], resolved)
    resolved.pop("hydra", None)
    return resolved


def _check_sizes(cfg: dict[str, Any]) -> None:
    """Image, patch and token grids that fit together."""
    ds, backbone = cfg["dataset"], cfg["backbone"]
    image, patch = ds.get("image_size"), ds.get("patch_size")
    if image is None or patch is None:
        return
    _require(image % patch == 0, "dataset.patch_size", patch, f"the image size dataset.image_size={image} must be a multiple of it")
    _require(image // patch >= 2, "dataset.patch_size", patch, f"the patch grid needs at least 2 x 2 cells (image size {image})")
    side = (cfg["task"].get("megapatch") or {}).get("side")
    if side is not None:
        cells = image // patch
        _require(side <= cells, "task.megapatch.side", side,
                 f"an integer from 2 to the patch grid side {cells} ({image} px images, {patch} px patches)")
    if isinstance(backbone.get("embed_dim"), int) and isinstance(backbone.get("num_heads"), int):  # a ViT
        _require(backbone["embed_dim"] % backbone["num_heads"] == 0, "backbone.num_heads", backbone["num_heads"],
                 f"it must divide backbone.embed_dim={backbone['embed_dim']}")
    step, what = _image_step(backbone)
    _require(backbone.get("image_size", image) % step == 0, "dataset.image_size", backbone.get("image_size", image),
             f"{what} needs an image size divisible by {step} (e.g. a 224 px dataset such as dataset=cifar10_224)")


def _image_step(backbone: dict[str, Any]) -> tuple[int, str]:
    """What the backbone's image size must be a multiple of, and the backbone's name."""
    from relvit.backbones.swin import image_step
    from relvit.backbones.t2t_vit import TOKEN_STRIDE

    if "depths" in backbone:
        return image_step(backbone["depths"]), f"Swin with {len(backbone['depths'])} stages"
    if "variant" in backbone:
        return TOKEN_STRIDE, "T2T-ViT"
    return 1, "ViT"


def _check_data(data: dict[str, Any], ds: dict[str, Any]) -> None:
    select_on = data.get("select_on", "val")
    fraction = data.get("val_fraction", 1)
    _require(fraction > 0 or select_on == "test", "data.val_fraction", fraction,
             f"a fraction strictly between 0 and 1 with data.select_on={select_on} "
             "(0, training on the whole split, needs data.select_on=test)")
    both = data.get("labels_per_class") is not None and data.get("label_fraction") is not None
    _require(not both, "data.label_fraction", data.get("label_fraction"),
             f"null when data.labels_per_class={data.get('labels_per_class')} is set: set one of them, not both")
    root = ds.get("root")
    if root is not None and not ds.get("download"):
        _require(Path(root).expanduser().is_dir(), "dataset.root", root,
                 "an existing folder that holds the data (conf/dataset/ says which layout), "
                 "or set dataset.download=true where the dataset can be downloaded")


def _check_files(cfg: dict[str, Any]) -> None:
    pretrained = cfg.get("pretrained")
    if pretrained is not None:
        path = weight_file(pretrained)
        _require(path.is_file(), "pretrained", str(pretrained),
                 f"the path of an existing checkpoint or weight file, or a directory with {EXPORTED_WEIGHTS}")
        _require(path.suffix in WEIGHT_SUFFIXES, "pretrained", str(pretrained), f"a file ending in one of {WEIGHT_SUFFIXES}")
    extend = cfg.get("extend_to_epochs")
    if extend is not None:
        _require(cfg.get("resume") is not None, "extend_to_epochs", extend,
                 "given with resume=<run>/checkpoints/last.ckpt, the run to extend")


def _check_hardware(cfg: dict[str, Any]) -> None:
    """Values that ask for a CUDA device need one."""
    import torch

    if torch.cuda.is_available():
        return
    accelerator = cfg["trainer"].get("accelerator")
    decode = cfg["data"].get("decode")
    _require(accelerator not in ("gpu", "cuda"), "trainer.accelerator", accelerator,
             "this machine has no CUDA GPU: use trainer=cpu, or trainer.accelerator=auto")
    _require(decode != "gpu", "data.decode", decode,
             "this machine has no CUDA device: use data.decode=auto or data.decode=cpu")


def check_token_grid(cfg: DictConfig, grid_size: int) -> None:
    """The built backbone's SSL token grid (``grid_size`` a side) must be the patch grid the model
    sees: image_size / patch_size cells a side, or the mega-patch side when the task tiles."""
    megapatch = cfg.task.get("megapatch")
    cells = megapatch.side if megapatch else cfg.dataset.image_size // cfg.dataset.patch_size
    if grid_size != cells:
        raise ConfigError(
            f"dataset.patch_size={cfg.dataset.patch_size} is invalid for this backbone: the model sees "
            f"{cells} x {cells} patches, but the backbone's SSL token grid is {grid_size} x {grid_size}; "
            f"use dataset.patch_size={cfg.dataset.image_size // grid_size}"
        )
