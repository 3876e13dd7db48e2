"""The online probe of pre-training learns from clean views and matches an offline linear probe."""
import json

import lightning as L
import pytest
import torch

from relvit.probes.features import extract_features
from relvit.probes.linear import linear_eval
from relvit.training import build, restore_weights


def test_training_batches_carry_a_clean_view_that_the_probe_reads(tiny_cfg):
    run = build(tiny_cfg("task=upstream"))
    dm, module = run.datamodule, run.module

    class Trainer:  # what the batch hook reads of the trainer
        training = True
        lightning_module = module

    images, labels = next(iter(dm.train_dataloader()))
    dm.trainer = Trainer()
    augmented, _, clean = dm.on_after_batch_transfer((images, labels), 0)
    assert torch.equal(clean, dm.transform_batch(images, train=False))
    assert not torch.equal(augmented, clean)  # the pretext batch is augmented, the probe's view is not
    module.train()
    state = torch.get_rng_state()
    tokens = module.clean_tokens(clean)
    assert torch.equal(torch.get_rng_state(), state)  # no random draw the training would see
    assert module.backbone.training  # back in training mode
    module.eval()
    with torch.no_grad():
        assert torch.allclose(tokens, module.backbone(clean, add_pos_embed=False)[1])  # as validation sees them


@pytest.mark.slow
def test_online_probe_ends_within_five_points_of_an_offline_linear_probe(cli, tmp_path):
    overrides = ["task=upstream", "backbone=vit_tiny", "backbone.depth=2", "trainer.max_epochs=30", "data.batch_size=128",
                 "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", f"paths.output_dir={tmp_path / 'run'}"]
    code, _, err = cli("train.py", *overrides)
    assert code == 0, err[-3000:]
    online = json.loads((tmp_path / "run" / "metrics.json").read_text())["val"]["val/probe_acc"]
    from conftest import compose_config

    L.seed_everything(0)
    run = build(compose_config(tmp_path, overrides))
    restore_weights(run.module, tmp_path / "run" / "checkpoints" / "best.ckpt")
    feats = {s: extract_features(run.module.backbone, run.datamodule, s, False) for s in ("train", "val")}
    offline = linear_eval(*((feats[s].by_kind["mean"], feats[s].labels) for s in ("train", "val")), None, 10,
                          lrs=[1e-3, 1e-2, 1e-1], weight_decays=[0.0, 1e-4, 1e-2], steps=300).val_acc
    assert abs(online - offline) <= 0.05, (online, offline)
