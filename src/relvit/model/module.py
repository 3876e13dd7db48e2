"""The Lightning module shared by every task: backbone, enabled heads, summed losses, metrics."""
from __future__ import annotations

import math
from typing import Any, Callable, cast

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric

from relvit.backbones.base import TokenBackbone
from relvit.errors import ConfigError
from relvit.model.hardware import clip_gradients, fused_on_cuda
from relvit.model.heads import ClassifierHead, PairScoreHead
from relvit.model.ssl import (
    NUM_RELATIONS,
    angle_targets,
    distance_targets,
    position_targets,
    relation_targets,
)
from relvit.model.task import TaskSpec
from relvit.probes.online import OnlineProbe

#: Parameters that timm (and DeiT) train without weight decay, besides every 1-D tensor.
NO_DECAY_NAMES = ("pos_embed", "cls_token")
#: Learned absolute position embeddings of the backbones, which ``add_pos_embed=false`` leaves out.
POSITION_EMBEDDING_NAMES = ("pos_embed", "absolute_pos_embed")
#: Checkpoint key of the online probe's bank of the epoch so far (a resume mid-epoch needs it).
PROBE_BANK = "relvit_probe_bank"


class RelViTModule(L.LightningModule):
    """Trains a ``TokenBackbone`` on the losses ``task`` enables; their plain sum is the loss.

    Logged per split (``train/``, ``val/``, ``test/``): ``loss`` and, for each enabled task, its
    loss and accuracy (``rel_*``, ``pos_*``, ``dist_loss``, ``angle_loss``, ``clf_loss`` and
    ``acc`` for classification, with ``acc_top5`` beyond 10 classes, ``probe_*`` for the online linear
    probe of upstream runs). Validation and test means are torchmetrics ``MeanMetric`` objects weighted by
    the batch size, so they count every sample once under DDP.
    """

    # targets on the G x G grid (buffers): relations and distances, angles [N, N]; positions [N]
    rel_target: torch.Tensor
    pos_target: torch.Tensor
    dist_target: torch.Tensor
    angle_target: torch.Tensor

    def __init__(
        self,
        backbone: TokenBackbone,
        task: TaskSpec,
        num_classes: int,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler],
        run_config: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.backbone = backbone
        self.task = task
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.run_config = run_config or {}
        self.eval_means = nn.ModuleDict()  # val/test metrics, one MeanMetric per logged name (made on first use)
        d, n, side = backbone.embed_dim, backbone.num_patches, backbone.grid_size
        self.relation_head = PairScoreHead(d, NUM_RELATIONS) if task.relations else None
        self.position_head = nn.Linear(d, n) if task.positions else None
        self.distance_head = PairScoreHead(d, 1) if task.distances else None
        self.angle_head = PairScoreHead(d, 1) if task.angles else None
        pool = task.classifier_pool
        if pool == "auto":
            pool = "cls" if backbone.has_cls_token else getattr(backbone, "pool_without_cls", "flatten")
        if pool == "cls" and not backbone.has_cls_token:
            raise ValueError("task.classifier_pool=cls, but the backbone has no CLS token: use mean or flatten")
        self.classifier = ClassifierHead(d, n, num_classes, pool) if task.supervised else None
        # the pretext losses train the patch tokens, not the CLS token: probe their mean. Its
        # initialisation draws from a forked RNG, so switching it on shifts no later random draw.
        self.probe = None
        if task.online_probe:
            with torch.random.fork_rng(devices=[]):
                self.probe = OnlineProbe(d, num_classes)
        self.register_buffer("rel_target", relation_targets(side), persistent=False)  # [N, N]
        self.register_buffer("pos_target", position_targets(side), persistent=False)  # [N]
        self.register_buffer("dist_target", distance_targets(side), persistent=False)  # [N, N]
        self.register_buffer("angle_target", angle_targets(side), persistent=False)  # [N, N]
        if task.freeze_backbone:
            self.backbone.requires_grad_(False)
        if not task.add_pos_embed:
            # no gradient can reach them in this task; frozen (not dropped) so that DDP needs no
            # unused-parameter search and a later fine-tuning still finds and trains them
            for name, param in self.backbone.named_parameters():
                if name.rsplit(".", 1)[-1] in POSITION_EMBEDDING_NAMES:
                    param.requires_grad_(False)

    @property
    def wants_clean_view(self) -> bool:
        """Whether training batches should also carry an un-augmented view (for the online probe)."""
        return self.probe is not None

    # ----------------------------------------------------------------------------------- steps
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits [B, C] of normalised images [B, 3, H, W] (supervised tasks)."""
        cls, patches = self.backbone(images, add_pos_embed=self.task.add_pos_embed)
        assert self.classifier is not None, "class logits need a supervised task"
        return self.classifier(cls, patches)

    def shuffle_patches(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Permute the grid cells of every image independently.

        images [B, 3, H, W] -> (shuffled images, perm [B, N]); token ``i`` of the shuffled image
        shows cell ``perm[b, i]`` of the original.
        """
        b, c, h, w = images.shape
        g = self.backbone.grid_size
        ph, pw = h // g, w // g
        cells = images.view(b, c, g, ph, g, pw).permute(0, 2, 4, 1, 3, 5).reshape(b, g * g, c, ph, pw)
        perm = torch.rand(b, g * g, device=images.device).argsort(dim=1)
        cells = cells[torch.arange(b, device=images.device)[:, None], perm]
        shuffled = cells.view(b, g, g, c, ph, pw).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)
        return shuffled, perm

    def compute_losses(self, images: torch.Tensor, labels: torch.Tensor, clean: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """All enabled losses and accuracies of one batch, plus their sum under ``loss``; ``clean``
        [B, 3, H, W] is the batch without augmentation, which the online probe reads when given."""
        task = self.task
        b = images.shape[0]
        n = self.backbone.num_patches
        perm = None
        if task.patch_shuffle and self.training:  # validation and test images keep their layout
            images, perm = self.shuffle_patches(images)
        cls, tokens = self.backbone(images, add_pos_embed=task.add_pos_embed)  # [B, D], [B, N, D]
        if task.cls_to_patches and cls is not None:
            tokens = tokens + cls[:, None]
        out: dict[str, torch.Tensor] = {}
        losses = []

        def pair_target(table: torch.Tensor) -> torch.Tensor:
            # [N, N] -> [B, N, N], following the shuffle when there is one
            if perm is None:
                return table.expand(b, n, n)
            return table[perm[:, :, None], perm[:, None, :]]

        if self.relation_head is not None:
            logits = self.relation_head(tokens)  # [B, 9, N, N]
            target = pair_target(self.rel_target)
            per_pair = F.cross_entropy(logits, target, reduction="none", label_smoothing=task.relation_label_smoothing)
            dropout_on = not task.relation_loss_dropout_needs_smoothing or task.relation_label_smoothing > 0
            if task.relation_loss_dropout > 0 and dropout_on:
                per_pair = F.dropout(per_pair, task.relation_loss_dropout, training=self.training)
            out["rel_loss"] = per_pair.mean()
            out["rel_acc"] = (logits.argmax(1) == target).float().mean()
            losses.append(out["rel_loss"])
        if self.position_head is not None:
            logits = self.position_head(tokens)  # [B, N, N]
            target = self.pos_target.expand(b, n) if perm is None else perm
            out["pos_loss"] = F.cross_entropy(logits.transpose(1, 2), target)
            out["pos_acc"] = (logits.argmax(-1) == target).float().mean()
            losses.append(out["pos_loss"])
        for key, head, table in (("dist", self.distance_head, self.dist_target), ("angle", self.angle_head, self.angle_target)):
            if head is not None:
                out[f"{key}_loss"] = F.mse_loss(head(tokens)[:, 0], pair_target(table))
                losses.append(out[f"{key}_loss"])
        if self.classifier is not None:
            logits = self.classifier(cls, tokens)
            out["clf_loss"] = F.cross_entropy(logits, labels)
            out["acc"] = (logits.argmax(-1) == labels).float().mean()
            if logits.shape[-1] > 10:  # top-5 says little with 10 classes or fewer
                out["acc_top5"] = (logits.topk(5, dim=-1).indices == labels[:, None]).any(-1).float().mean()
            losses.append(out["clf_loss"])
        if self.probe is not None:
            # the probe reads (and in training keeps, for its fit) features it can never send a gradient to
            probe_tokens = tokens.detach() if clean is None else self.clean_tokens(clean)
            if self.training:
                self.probe.collect(probe_tokens, labels)
            with torch.no_grad():
                logits = self.probe(probe_tokens)
            out["probe_loss"] = F.cross_entropy(logits, labels)
            out["probe_acc"] = (logits.argmax(-1) == labels).float().mean()
        out["loss"] = torch.stack(losses).sum()
        return out

    @torch.no_grad()
    def clean_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Patch tokens [B, N, D] of un-augmented images, as validation computes them (evaluation
        mode, no patch shuffle), drawing no random number the training would see."""
        was_training = self.backbone.training
        devices = [images.device] if images.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            self.backbone.eval()
            try:
                cls, tokens = self.backbone(images, add_pos_embed=self.task.add_pos_embed)
            finally:
                self.backbone.train(was_training)
        if self.task.cls_to_patches and cls is not None:
            tokens = tokens + cls[:, None]
        return tokens

    def _step(self, batch, split: str) -> torch.Tensor:
        images, labels, *clean = batch
        out = self.compute_losses(images, labels, clean[0] if clean else None)
        loss = out["loss"]
        if split != "train":
            self._log_exact_means(out, split, images.shape[0])
            return loss
        self.log_dict({f"{split}/{k}": v.detach() for k, v in out.items() if k != "loss"}, on_step=True, on_epoch=True,
                      batch_size=images.shape[0], prog_bar=False)
        self.log(f"{split}/loss", out["loss"].detach(), on_step=True, on_epoch=True, batch_size=images.shape[0], prog_bar=True)
        return loss

    def _log_exact_means(self, out: dict[str, torch.Tensor], split: str, batch_size: int) -> None:
        """Per-sample means over the whole split, whatever the number of processes: torchmetrics sums
        value x count across ranks (Lightning's own sync truncates the count to an integer mean)."""
        for key, value in out.items():
            name = f"{split}_{key}"
            if name not in self.eval_means:
                self.eval_means[name] = MeanMetric().to(self.device)
            metric = cast(MeanMetric, self.eval_means[name])
            # a NaN batch enters as +inf, so the mean is non-finite and the guard sees it: torchmetrics drops
            # NaN values, and its nan_strategy="disable" would ignore the weights (a mean over batches)
            metric.update(torch.nan_to_num(value.detach(), nan=math.inf, posinf=math.inf, neginf=-math.inf), weight=batch_size)
            self.log(f"{split}/{key}", metric, on_step=False, on_epoch=True, prog_bar=key == "loss",
                     metric_attribute=f"eval_means.{name}")

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    # ------------------------------------------------------------------------------ optimiser
    def configure_optimizers(self):
        # parameter groups by (weight decay exempt, learning-rate scale); the full rate's groups first,
        # since the schedule reads its base rate from the first group
        groups: dict[tuple[bool, float], list[nn.Parameter]] = {}
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            exempt = param.ndim <= 1 or name.split(".")[-1] in NO_DECAY_NAMES
            key = (exempt and not self.task.decay_all_parameters, self._lr_scale(name))
            groups.setdefault(key, []).append(param)
        if not self.task.layer_decay:  # the two groups every run had before layer decay, even when empty
            groups.setdefault((False, 1.0), []), groups.setdefault((True, 1.0), [])
        order = sorted(groups, key=lambda k: (-k[1], k[0]))
        optimizer = fused_on_cuda(self.optimizer_factory, self.device)(
            [{"params": groups[k], **({"weight_decay": 0.0} if k[0] else {}), "lr_scale": k[1]} for k in order])
        for group in optimizer.param_groups:
            group["lr"] *= group["lr_scale"]
        scheduler = self.scheduler_factory(optimizer, total_steps=int(self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _lr_scale(self, name: str) -> float:
        """``task.layer_decay ** (L - layer)`` for a backbone parameter (L the backbone's top layer, the
        heads above it at the full rate); 1 without layer decay."""
        decay = self.task.layer_decay
        if not decay or not name.startswith("backbone."):
            return 1.0
        layer_of = getattr(self.backbone, "layer_of", None)
        if layer_of is None:
            raise ConfigError(f"task.layer_decay={decay} is invalid for backbone {type(self.backbone).__name__}: "
                              "layer-wise decay is defined for the ViT backbones; set task.layer_decay=null")
        return float(decay ** (self.backbone.num_layers - layer_of(name.removeprefix("backbone."))))

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        # Lightning's mixed-precision plugin refuses to clip before any fused step, even under bf16,
        # which has no gradient scaler: relvit.model.hardware.clip_gradients clips where that is valid
        clip_gradients(self.trainer.precision_plugin, optimizer, gradient_clip_val, gradient_clip_algorithm)

    # ---------------------------------------------------------------------------- online probe
    # (the bank empties at every fit, so a new epoch starts with an empty one and a resumed run with
    # the one its checkpoint kept)
    def on_validation_epoch_start(self) -> None:
        if self.probe is not None and not self.trainer.sanity_checking and self.trainer.state.fn == "fit":
            self._fit_probe()

    def on_train_epoch_end(self) -> None:
        # epochs without a validation fit here, so a run's probe always ends fitted to its last epoch (a
        # validation empties the bank; every process trains the same number of batches, so all agree)
        if self.probe is not None and self.probe.banked:
            self._fit_probe()

    def _fit_probe(self) -> None:
        assert self.probe is not None
        loss = self.probe.fit(self.task.probe_lr, self.task.probe_steps, seed=self.global_step)
        if loss is not None:
            self.log("train/probe_fit_loss", loss, on_step=False, on_epoch=True, sync_dist=False)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.probe is None:
            return
        if PROBE_BANK in checkpoint:
            self.probe.load_bank_state(checkpoint[PROBE_BANK])
        # runs saved when the probe trained in the run's optimiser have a third parameter group (the
        # probe's); the optimiser now has two: drop it, so those runs still resume
        for state in checkpoint.get("optimizer_states", []):
            groups = state.get("param_groups", [])
            if len(groups) == 3:
                dropped = set(groups.pop()["params"])
                state["state"] = {k: v for k, v in state.get("state", {}).items() if k not in dropped}
        for scheduler in checkpoint.get("lr_schedulers", []):
            for key in ("base_lrs", "_last_lr"):
                if len(scheduler.get(key) or []) == 3:
                    scheduler[key] = scheduler[key][:2]

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # the composed run config, as plain containers, so evaluate.py can rebuild the run
        checkpoint["relvit_config"] = self.run_config
        if self.probe is not None and "optimizer_states" in checkpoint:  # what a resume needs, not weights-only files
            checkpoint[PROBE_BANK] = self.probe.bank_state()
