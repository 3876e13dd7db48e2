"""kNN and linear evaluation of a frozen encoder on a data module's splits."""
from __future__ import annotations

from typing import Any

import torch

from relvit.backbones.base import TokenBackbone
from relvit.probes.features import extract_features, feature_kinds
from relvit.probes.knn import knn_accuracy
from relvit.probes.linear import linear_eval

PROTOCOLS = ("knn", "linear")


def frozen_eval(backbone: TokenBackbone, datamodule, protocols: list[str], features: str = "both",
                add_pos_embed: bool = False, knn: dict[str, Any] | None = None, linear: dict[str, Any] | None = None,
                device: torch.device | str = "cpu") -> dict[str, dict[str, float]]:
    """Accuracies of each protocol and feature kind on the evaluation splits the data has:
    {"val": {"val/knn_acc_cls": ..., "val/linear_acc_mean": ...}, "test": {...}}. The training split
    is the kNN memory bank and the linear classifier's training set; ``linear`` also reports the
    chosen ``linear_lr_<kind>`` and ``linear_wd_<kind>`` under "val"."""
    bad = [p for p in protocols if p not in PROTOCOLS]
    if bad:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {bad[0]!r}")
    kinds = feature_kinds(features, backbone.has_cls_token)
    splits = [s for s in ("val", "test") if datamodule.splits.get(s) is not None]
    feats = {s: extract_features(backbone.to(device), datamodule, s, add_pos_embed, device) for s in ["train", *splits]}
    train = feats["train"]
    num_classes = datamodule.num_classes
    out: dict[str, dict[str, float]] = {s: {} for s in splits}
    for kind in kinds:
        if "knn" in protocols:
            for s in splits:
                for name, value in knn_accuracy(train.by_kind[kind], train.labels, feats[s].by_kind[kind], feats[s].labels,
                                                num_classes, **(knn or {})).items():
                    out[s][f"{s}/knn_{name}_{kind}"] = value
        if "linear" in protocols:
            test = (feats["test"].by_kind[kind], feats["test"].labels) if "test" in feats else None
            result = linear_eval((train.by_kind[kind], train.labels), (feats["val"].by_kind[kind], feats["val"].labels),
                                 test, num_classes, **(linear or {}))
            out["val"][f"val/linear_acc_{kind}"] = result.val_acc
            out["val"][f"val/linear_lr_{kind}"] = result.lr
            out["val"][f"val/linear_wd_{kind}"] = result.weight_decay
            if result.val_acc_top5 is not None:
                out["val"][f"val/linear_acc_top5_{kind}"] = result.val_acc_top5
            if test is not None and result.test_acc is not None:
                out["test"][f"test/linear_acc_{kind}"] = result.test_acc
                if result.test_acc_top5 is not None:
                    out["test"][f"test/linear_acc_top5_{kind}"] = result.test_acc_top5
    return out
