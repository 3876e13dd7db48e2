"""Reading checkpoints and weight files without executing code, and warm-starting from them."""
from __future__ import annotations

import logging
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from relvit.errors import ConfigError, MissingFileError, UserError
from relvit.runs.weight_resampling import CannotResample, resample

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".ckpt", ".pth", ".pt", ".bin", ".safetensors")
#: The weight file of a directory written by ``relvit.export`` (as timm and Hugging Face name it).
EXPORTED_WEIGHTS = "model.safetensors"


class UnsafeCheckpointError(UserError):
    """The file holds objects that only arbitrary code could rebuild; it is not loaded."""


class CorruptCheckpointError(UserError):
    """The file is empty, truncated, or not a checkpoint at all."""


#: A warm start that loads less than this share of the backbone's tensors is refused (pretrained_strict).
MIN_BACKBONE_SHARE = 0.5


def weight_file(path: str | Path) -> Path:
    """``path`` itself, or for a directory (an export) the weight file inside it."""
    path = Path(str(path))
    return path / EXPORTED_WEIGHTS if path.is_dir() else path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint or weight file as plain containers and tensors (``weights_only``)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"checkpoint {str(path)!r} does not exist")
    if path.stat().st_size == 0:
        raise CorruptCheckpointError(f"{str(path)!r} is empty (0 bytes): not a checkpoint; was its save interrupted?")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError) as err:
            raise CorruptCheckpointError(f"{str(path)!r} is not a readable .safetensors file ({err})") from None
    check_archive(path)
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        message = str(err)
        found = re.search(r"Unsupported global: GLOBAL (\S+)", message)
        if found is None:  # bytes the unpickler cannot parse: damage, not a payload
            raise CorruptCheckpointError(
                f"{str(path)!r} is corrupt or not a checkpoint (its pickle data cannot be read); "
                "pass a file written by train.py or torch.save"
            ) from None
        raise UnsafeCheckpointError(
            f"refusing to load {str(path)!r}: it holds objects that need arbitrary code to rebuild "
            f"({found.group(1)}). Only tensors and plain containers are read; re-save the weights with "
            f"torch.save(model.state_dict(), ...) or as .safetensors."
        ) from None
    except (RuntimeError, EOFError, KeyError, ValueError, OSError) as err:
        reason = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
        raise CorruptCheckpointError(
            f"{str(path)!r} is truncated, corrupt or not a checkpoint ({reason}); pass a file written by train.py or torch.save"
        ) from None
    if not isinstance(content, dict):
        raise CorruptCheckpointError(f"{str(path)!r} holds a {type(content).__name__}, not a checkpoint (a dict of tensors)")
    check_tensors(content, path)
    return content


def check_archive(path: Path) -> None:
    """Refuse a zip checkpoint whose records would unpack to more than the file holds: torch.save
    stores them uncompressed, so a compressed or overlapping record can only be a bomb."""
    if not zipfile.is_zipfile(path):
        return  # torch's legacy format reads each storage from the file itself
    size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as archive:
            records = archive.infolist()
    except (zipfile.BadZipFile, OSError) as err:
        raise CorruptCheckpointError(f"{str(path)!r} is a damaged zip archive ({err}); pass a file written by train.py or torch.save") from None
    packed = [r.filename for r in records if r.compress_type != zipfile.ZIP_STORED or r.file_size != r.compress_size]
    if packed or sum(r.file_size for r in records) > size:
        raise CorruptCheckpointError(
            f"{str(path)!r} is refused: its records unpack to {sum(r.file_size for r in records)} bytes from a "
            f"{size}-byte file{f' ({packed[0]} is compressed)' if packed else ''}; torch.save stores them "
            "uncompressed, within the file")


def check_tensors(content: Any, path: Path) -> None:
    """Refuse tensors that claim more elements than their storage holds (a stride-0 view of one number
    can claim 10^10, which the first copy makes real), or storages larger than the file."""
    size, seen, total = path.stat().st_size, set(), 0
    stack = [("", content)]
    while stack:
        where, node = stack.pop()
        if isinstance(node, dict):
            stack += [(f"{where}.{k}" if where else str(k), v) for k, v in node.items()]
        elif isinstance(node, (list, tuple)):
            stack += [(f"{where}[{i}]", v) for i, v in enumerate(node)]
        elif isinstance(node, torch.Tensor):
            storage = node.untyped_storage()
            held = storage.nbytes() // node.element_size() - node.storage_offset()
            if node.numel() > held:
                raise CorruptCheckpointError(
                    f"{str(path)!r} is refused: tensor {where} claims {tuple(node.shape)} = {node.numel()} elements "
                    f"(strides {node.stride()}) from a storage of {max(held, 0)}; a checkpoint's tensors hold their own data")
            if storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                total += storage.nbytes()
    if total > size:
        raise CorruptCheckpointError(f"{str(path)!r} is refused: its tensors hold {total} bytes, more than the {size}-byte file")


def state_dict_of(content: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint, whatever wraps them: a Lightning checkpoint (``state_dict``),
    a DeiT / T2T release (``model``, ``state_dict_ema``), or a bare state dict."""
    for key in ("state_dict", "model", "state_dict_ema", "model_ema"):
        if isinstance(content.get(key), dict):
            content = content[key]
            break
    tensors = {k: v for k, v in content.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CorruptCheckpointError("the checkpoint holds no tensors")
    return tensors


@dataclass
class LoadReport:
    """What ``load_pretrained`` did with each tensor name."""

    loaded: list[str] = field(default_factory=list)
    resampled: list[str] = field(default_factory=list)
    shape_mismatch: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    not_mapped: list[str] = field(default_factory=list)  # a published file's names the backbone's mapping drops
    missing: list[str] = field(default_factory=list)

    def log(self, source: str, limit: int = 12) -> None:
        """One line of counts; names only for what was not loaded (at most ``limit`` of each kind)."""
        log.info("pretrained %s: %d tensors loaded (%d of them resampled to this run's sizes), %d skipped (shape "
                 "differs), %d skipped (not in this task's model), %d skipped (the published classifier head or "
                 "buffers the backbone derives), %d missing (left as initialised)", source, len(self.loaded),
                 len(self.resampled), len(self.shape_mismatch), len(self.unexpected), len(self.not_mapped), len(self.missing))
        for title, names in (
            ("resampled", self.resampled),
            ("skipped, shape differs", self.shape_mismatch),
            ("skipped, not in this task's model", self.unexpected),
            ("skipped, the published classifier head or derived buffers", self.not_mapped),
            ("missing, left as initialised", self.missing),
        ):
            if names:
                more = f" ... and {len(names) - limit} more" if len(names) > limit else ""
                log.info("  %s: %s%s", title, ", ".join(names[:limit]), more)


def load_pretrained(module: nn.Module, path: str | Path, strict: bool = True) -> LoadReport:
    """Warm-start ``module`` (a RelViTModule) from a checkpoint of this project or from published
    backbone weights (mapped through the backbone's ``remap_state_dict``).

    Position embeddings, patch-embedding kernels and relative-position tables made for another
    image, patch or window size are resampled to this run's (``weight_resampling``); other tensors
    whose shapes differ, tensors the module lacks and those the backbone's mapping of a published file
    drops (its classifier head) are skipped. The report lists the loaded, resampled, skipped and missing names. With ``strict``, a file that fills less than
    ``MIN_BACKBONE_SHARE`` of the backbone's tensors (another architecture) is refused.
    """
    tensors = state_dict_of(read_checkpoint(weight_file(path)))
    report = LoadReport()
    if not any(k.startswith("backbone.") for k in tensors):
        remap = getattr(module.backbone, "remap_state_dict", None)
        if remap is None:
            raise ValueError(f"{path}: not a checkpoint of this project, and {type(module.backbone).__name__} cannot map published weights")
        # each mapping renames or drops a name on its own, so a name alone tells whether it is dropped
        report.not_mapped = [k for k, v in tensors.items() if not remap({k: v})]
        tensors = {f"backbone.{k}": v for k, v in remap(tensors).items()}
    own = module.state_dict()
    chosen = {}
    for name, value in tensors.items():
        if name not in own:
            report.unexpected.append(name)
            continue
        if own[name].shape != value.shape:
            try:
                value = resample(name, value, own[name], module)
            except CannotResample as why:
                report.shape_mismatch.append(f"{name} {tuple(value.shape)} vs {tuple(own[name].shape)} ({why})")
                continue
            report.resampled.append(f"{name} {tuple(tensors[name].shape)} -> {tuple(value.shape)}")
        chosen[name] = value
        report.loaded.append(name)
    report.missing = [k for k in own if k not in chosen]
    backbone = [k for k in own if k.startswith("backbone.")]
    share = sum(k in chosen for k in backbone) / max(1, len(backbone))
    if strict and share < MIN_BACKBONE_SHARE:
        raise ConfigError(
            f"pretrained={str(path)!r} is invalid for this backbone: it fills {sum(k in chosen for k in backbone)} of "
            f"its {len(backbone)} tensors ({share:.0%}; at least {MIN_BACKBONE_SHARE:.0%} needed), "
            f"{len(report.shape_mismatch)} differ in shape. Use the backbone it was trained with, or "
            "pretrained_strict=false to load the matching tensors anyway"
        )
    module.load_state_dict(chosen, strict=False)
    report.log(str(path))
    return report
