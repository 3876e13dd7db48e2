"""The online probe of pre-training learns from clean views and matches an offline linear probe."""
import json

import lightning as L
import pytest
import torch

from relvit.probes.features import extract_features
from relvit.probes.linear import linear_eval
from relvit.training.run import build, restore_weights


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


@pytest.mark.parametrize("epochs", [6, pytest.param(30, marks=pytest.mark.slow)])
def test_online_probe_ends_within_five_points_of_an_offline_linear_probe(cli, tmp_path, epochs):
    overrides = ["task=upstream", "backbone=vit_tiny", "backbone.depth=2", f"trainer.max_epochs={epochs}", "data.batch_size=128",
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
    print(f"online probe {online:.4f}, offline linear probe {offline:.4f}")
    assert abs(online - offline) <= 0.05, (online, offline)


def test_the_probe_fits_the_features_of_the_epoch_and_empties_its_bank():
    from relvit.probes.online import OnlineProbe

    torch.manual_seed(0)
    centres = torch.randn(4, 8) * 3
    labels = torch.arange(4).repeat(50)
    patches = centres[labels][:, None] + 0.3 * torch.randn(200, 5, 8)  # [B, N, D]: the mean token is separable
    probe = OnlineProbe(8, 4)
    for x, y in zip(patches.split(64), labels.split(64)):
        probe.collect(x, y)
    assert probe.banked == 200
    state = torch.get_rng_state()
    probe.fit(lr=0.1, steps=50, seed=0)
    assert torch.equal(torch.get_rng_state(), state)  # its draws come from its own generator
    assert probe.banked == 0
    assert torch.allclose(probe.norm.running_mean, patches.mean(1).mean(0), atol=1e-5)
    assert (probe(patches).argmax(-1) == labels).float().mean() == 1.0
    shuffled = labels[torch.randperm(200)]  # no structure left: a fit can only memorise so much of 200 points in 8-d
    fresh = OnlineProbe(8, 4)
    fresh.collect(patches, shuffled)
    fresh.fit(lr=0.1, steps=50, seed=0)
    assert (fresh(patches).argmax(-1) == shuffled).float().mean() < 0.6
    weight = fresh.fc.weight.clone()
    assert fresh.fit(lr=0.1, steps=50) is None and torch.equal(fresh.fc.weight, weight)  # an empty bank: weights kept


def test_runs_saved_with_the_probe_in_the_optimiser_still_resume(tiny_cfg):
    module = build(tiny_cfg("task=upstream")).module
    old = {"optimizer_states": [{"state": {0: "a", 1: "b", 7: "probe"},
                                 "param_groups": [{"params": [0, 1]}, {"params": [2, 3]}, {"params": [7, 8]}]}],
           "lr_schedulers": [{"base_lrs": [5e-4, 5e-4, 0.1], "_last_lr": [1e-4, 1e-4, 0.02]}]}
    module.on_load_checkpoint(old)
    assert old["optimizer_states"][0]["param_groups"] == [{"params": [0, 1]}, {"params": [2, 3]}]
    assert old["optimizer_states"][0]["state"] == {0: "a", 1: "b"}
    assert old["lr_schedulers"][0] == {"base_lrs": [5e-4, 5e-4], "_last_lr": [1e-4, 1e-4]}

