"""What pre-training learned, in one line after a two-phase run: kNN of its encoder against a random one."""
from __future__ import annotations

from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig

from relvit.probes.features import extract_features
from relvit.probes.knn import knn_accuracy
from relvit.runs.checkpoints import read_checkpoint, state_dict_of
from relvit.runs.saved_config import rebuild, saved_run_config
from relvit.runs.trusted_config import trusted_resolved


def knn_pretrained_vs_random(cfg: DictConfig, checkpoint: str, split: str = "test") -> dict[str, float]:
    """Weighted kNN accuracy (mean patch token, k 20, temperature 0.07) on ``split`` (val where the data
    has no test split) of the encoder saved in ``checkpoint`` and of the same encoder freshly
    initialised with the run's seed: {"split": ..., "pretrained": acc, "random": acc}."""
    from relvit.training.run import build

    content = read_checkpoint(checkpoint)
    run_cfg = rebuild(saved_run_config(content, "pretrained", checkpoint), cfg, [])
    run_cfg.pretrained = run_cfg.resume = run_cfg.finetune = run_cfg.extend_to_epochs = None
    run_cfg = trusted_resolved(run_cfg, f"the config saved in {checkpoint}")
    with torch.random.fork_rng(devices=[]):
        L.seed_everything(int(run_cfg.seed), workers=True, verbose=False)
        run = build(run_cfg, run_config={})
    device = "cuda" if torch.cuda.is_available() and str(run_cfg.trainer.accelerator) != "cpu" else "cpu"
    dm, backbone, add_pos = run.datamodule, run.module.backbone.to(device), run.module.task.add_pos_embed
    split = split if dm.splits.get(split) is not None else "val"
    out: dict[str, Any] = {"split": split}
    for name in ("random", "pretrained"):
        if name == "pretrained":
            run.module.load_state_dict(state_dict_of(content))
        train = extract_features(backbone, dm, "train", add_pos, device)
        query = extract_features(backbone, dm, split, add_pos, device)
        out[name] = knn_accuracy(train.by_kind["mean"], train.labels, query.by_kind["mean"], query.labels, dm.num_classes)["acc"]
    return out


def report_pretraining_knn(cfg: DictConfig, summary: dict[str, Any]) -> None:
    """After a run with a pre-training phase, print its encoder's kNN accuracy next to a random one's."""
    from relvit.runs.distributed import is_rank_zero

    best = summary.get("pretrain", {}).get("best_checkpoint")
    if not best or not is_rank_zero():
        return
    knn = knn_pretrained_vs_random(cfg, best)
    print(f"kNN accuracy ({knn['split']}, mean patch token, k=20): pre-trained encoder {knn['pretrained']:.4f}, "
          f"randomly initialised encoder {knn['random']:.4f}", flush=True)
