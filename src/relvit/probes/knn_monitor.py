"""The kNN monitor of pre-training: weighted kNN accuracy of the frozen features, every few epochs."""
from __future__ import annotations

import lightning as L
from lightning.pytorch.trainer.states import TrainerFn

from relvit.backbones.base import TokenBackbone
from relvit.probes.features import extract_features, feature_kinds
from relvit.probes.knn import knn_accuracy


class KNNMonitor(L.Callback):
    """After every ``every_n_epochs``-th validation of a run without a supervised head (and after the
    last one, and in ``trainer.validate``), logs ``val/knn_acc`` (and ``val/knn_acc_<kind>`` for each
    feature kind of ``features``): the training split's features, computed on the model's device
    without augmentation, vote for each validation image. Under DDP each process encodes its own
    slice of both splits and every process gets all the features, so the figure is the same on every
    rank; no random number is drawn."""

    def __init__(self, every_n_epochs: int = 5, features: str = "mean", k: int = 20, temperature: float = 0.07):
        self.every_n_epochs = every_n_epochs
        self.features = features
        self.k = k
        self.temperature = temperature

    def due(self, trainer: L.Trainer) -> bool:
        if trainer.sanity_checking:
            return False
        if trainer.state.fn != TrainerFn.FITTING:  # trainer.validate: judging a checkpoint
            return True
        epoch = trainer.current_epoch + 1
        return epoch % self.every_n_epochs == 0 or epoch == trainer.max_epochs

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        task = getattr(pl_module, "task", None)
        datamodule = getattr(trainer, "datamodule", None)
        if task is None or task.supervised or datamodule is None or not self.due(trainer):
            return
        backbone: TokenBackbone = pl_module.backbone  # type: ignore[assignment]
        train = extract_features(backbone, datamodule, "train", task.add_pos_embed, pl_module.device, sharded=True)
        val = extract_features(backbone, datamodule, "val", task.add_pos_embed, pl_module.device, sharded=True)
        kinds = feature_kinds(self.features, backbone.has_cls_token)
        for kind in kinds:
            acc = knn_accuracy(train.by_kind[kind], train.labels, val.by_kind[kind], val.labels, datamodule.num_classes,
                               self.k, self.temperature)["acc"]
            pl_module.log(f"val/knn_acc_{kind}", acc, on_epoch=True)
            if kind == kinds[0]:
                pl_module.log("val/knn_acc", acc, on_epoch=True)
