"""Pictures of what a checkpoint learned: ``python -m relvit.visualize ckpt_path=<ckpt> [image=<file>]``.

Writes PNG files into ``output_dir`` (default ``outputs/visualize/<time>``): the last block's CLS
attention per head and averaged (ViT backbones), the relation head's predicted class of every
patch relative to a query patch next to the true one, the position head's predicted grid next to
the true one (each a matplotlib figure of ``relvit.evaluation.figures``: panel titles, colour bars, the legend
of the relation classes), and the position-embedding similarity grid (for tasks that add position
embeddings).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.trainer.states import TrainerFn
from matplotlib.figure import Figure
from omegaconf import OmegaConf
from PIL import Image
from timm.utils import AttentionExtract
from torchvision.utils import save_image

from relvit.data.verify import image_problem
from relvit.errors import UserError
from relvit.evaluation.figures import attention_figure, position_figure, relation_figure, rendered
from relvit.evaluation.pictures import position_similarity_grid
from relvit.runs.checkpoints import read_checkpoint, state_dict_of
from relvit.runs.files import atomic_write
from relvit.runs.saved_config import saved_run_config, without_downloads
from relvit.runs.trusted_config import check_resolvers, trusted_resolved

KEYS = {"ckpt_path": None, "image": None, "output_dir": None, "index": "0", "query_patch": None}


@torch.no_grad()
def cls_attention(backbone: Any, images: torch.Tensor, add_pos_embed: bool) -> torch.Tensor | None:
    """The last block's attention of the CLS token to the patches, [heads, N], for one image [1, 3, H, W]
    (None for backbones that are not timm ViTs with a CLS token). timm's AttentionExtract hooks the
    block's attention dropout, which the fused kernel bypasses, so the plain path runs here."""
    vit = getattr(backbone, "vit", None)
    if vit is None or not getattr(backbone, "has_cls_token", False):
        return None
    last = len(vit.blocks) - 1
    attn = vit.blocks[last].attn
    fused, attn.fused_attn = attn.fused_attn, False
    try:
        extractor = AttentionExtract(backbone, names=[f"vit.blocks.{last}.attn.attn_drop"], method="hook")
        backbone(images, add_pos_embed=add_pos_embed)
        assert extractor.hooks is not None  # the hook method
        maps: dict[str, torch.Tensor] = extractor.hooks.get_output(device=images.device)  # {name: [1, heads, T, T]}
    finally:
        attn.fused_attn = fused
    return next(iter(maps.values()))[0, :, 0, 1:]


def figures(module: Any, image: torch.Tensor, shown: torch.Tensor, query: int) -> dict[str, Figure]:
    """The figures of one normalised image [1, 3, H, W] (``shown``: the same image in [0, 1]) as
    {file name: figure}; the position-embedding grid is ``position_similarity``'s picture."""
    backbone, task = module.backbone, module.task
    side = backbone.grid_size
    out: dict[str, Figure] = {}
    attention = cls_attention(backbone, image, task.add_pos_embed)
    if attention is not None:
        out["cls_attention.png"] = attention_figure(shown[0], torch.cat([attention, attention.mean(0, keepdim=True)]), side)
    with torch.no_grad():
        _, tokens = backbone(image, add_pos_embed=task.add_pos_embed)
    if module.relation_head is not None:
        # class of every patch b relative to the query patch: pair (b, query)
        predicted = module.relation_head(tokens)[0].argmax(0)[:, query]  # [N]
        out["relations.png"] = relation_figure(shown[0], query, predicted, module.rel_target[:, query], side)
    if module.position_head is not None:
        predicted = module.position_head(tokens)[0].argmax(-1)  # [N]
        out["positions.png"] = position_figure(shown[0], predicted, module.pos_target, side)
    return out


def position_similarity(module: Any) -> torch.Tensor | None:
    """The position-embedding similarity grid, RGB [3, h, w], for tasks that add (and so train) them."""
    backbone = module.backbone
    pos = backbone.position_embeddings()
    if pos is not None and pos.shape[0] == backbone.num_patches and module.task.add_pos_embed:
        return position_similarity_grid(pos, backbone.grid_size)
    return None


def pictures(module: Any, image: torch.Tensor, shown: torch.Tensor, query: int) -> dict[str, torch.Tensor]:
    """The pictures of ``figures`` rendered, and the position-embedding grid, as {file name: RGB [3, h, w]}."""
    out = {name: rendered(fig) for name, fig in figures(module, image, shown, query).items()}
    grid = position_similarity(module)
    if grid is not None:
        out["position_similarity.png"] = grid
    return out


def parse(argv: list[str]) -> dict[str, str | None]:
    values = dict(KEYS)
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in KEYS:
            raise UserError(f"{arg!r} is invalid: give key=value with a key among {sorted(KEYS)}")
        values[key] = value
    if not values["ckpt_path"]:
        raise UserError("ckpt_path is missing: python -m relvit.visualize ckpt_path=<run>/checkpoints/best.ckpt [image=<file>]")
    return values


def load_image(path: str, size: int) -> torch.Tensor:
    """An image file -> uint8 [1, 3, size, size], verified as the training data is."""
    problem = image_problem(path)
    if problem:
        raise UserError(f"image={path!r} cannot be read as an image: {problem}")
    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    except (OSError, ValueError) as err:
        raise UserError(f"image={path!r} cannot be read as an image: {err}") from None
    return torch.from_numpy(np.array(rgb)).permute(2, 0, 1)[None].contiguous()


def visualize(args: dict[str, str | None]) -> Path:
    """Write the pictures of ``args["ckpt_path"]`` and return the directory they are in."""
    from relvit.training.run import build

    ckpt = str(args["ckpt_path"])
    content = read_checkpoint(ckpt)
    saved = saved_run_config(content, "ckpt_path", ckpt)
    check_resolvers({k: v for k, v in saved.items() if k != "paths"}, f"the config saved in {ckpt}")
    cfg = OmegaConf.create(saved)
    without_downloads(cfg)
    cwd = Path.cwd()
    out_dir = Path(args["output_dir"] or cwd / "outputs" / "visualize" / time.strftime("%Y-%m-%d_%H-%M-%S"))
    cfg.paths = {"root_dir": str(cwd), "data_dir": str(cwd / "data"), "log_dir": str(cwd / "outputs"), "output_dir": str(out_dir)}
    cfg.pretrained = cfg.resume = cfg.finetune = None
    run = build(trusted_resolved(cfg, f"the config saved in {ckpt}"), run_config={})
    run.module.load_state_dict(state_dict_of(content))
    module, dm = run.module.eval(), run.datamodule
    if args["image"]:
        raw = load_image(str(args["image"]), dm.image_size)
    else:
        split = "test" if dm.splits.get("test") is not None else "val"
        data = dm.splits[split]
        index = int(str(args["index"]))
        if not 0 <= index < len(data) or not hasattr(data, "images"):
            raise UserError(f"index={index} is invalid: the {split} split has {len(data)} images (or is not in memory: give image=<file>)")
        raw = data.images[index:index + 1]
    image = dm.transform_batch(raw, train=False)
    n = module.backbone.num_patches
    query = int(args["query_patch"]) if args["query_patch"] is not None else (module.backbone.grid_size // 2) * (module.backbone.grid_size + 1)
    if not 0 <= query < n:
        raise UserError(f"query_patch={query} is invalid: give a patch index in [0, {n - 1}] (raster order)")
    shown = raw.float() / 255
    drawn = pictures(module, image, shown, query)
    taken = [name for name in drawn if (out_dir / name).exists()]
    if taken:
        raise UserError(f"output_dir={str(out_dir)!r} already holds {taken}: give another output_dir")
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, picture in drawn.items():
        atomic_write(out_dir / name, lambda f: save_image(picture, f, format="png"))
        print(f"wrote {out_dir / name} ({picture.shape[-1]} x {picture.shape[-2]})", flush=True)
    return out_dir


def main(argv: list[str]) -> int:
    try:
        visualize(parse(argv))
    except (UserError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


class PicturesToTensorBoard(L.Callback):
    """Every ``every_n_epochs`` validations, the figures of the first validation image (those of
    ``figures``, rendered as the PNG files are; the position-embedding grid is ``EmbeddingImages``'s,
    logged when it changes) go to TensorBoard as ``pictures/<name>``. Drawn in evaluation mode, without gradients or random draws."""

    def __init__(self, every_n_epochs: int = 5):
        self.every_n_epochs = every_n_epochs

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        if trainer.sanity_checking or not trainer.is_global_zero or trainer.state.fn != TrainerFn.FITTING:
            return
        if epoch % self.every_n_epochs and epoch != trainer.max_epochs:
            return
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        datamodule = getattr(trainer, "datamodule", None)
        if not loggers or datamodule is None or not hasattr(pl_module, "backbone"):
            return
        raw, _ = next(iter(datamodule.eval_loader("val", pl_module.device)))
        raw = raw[:1]
        side = int(pl_module.backbone.grid_size)  # type: ignore[union-attr, arg-type]
        was_training = pl_module.training
        pl_module.eval()
        try:
            with torch.no_grad():
                drawn = figures(pl_module, datamodule.transform_batch(raw, train=False), raw.float() / 255,
                                (side // 2) * (side + 1))
        finally:
            pl_module.train(was_training)
        for name, fig in drawn.items():
            picture = rendered(fig)
            for logger in loggers:
                logger.experiment.add_image(f"pictures/{name[:-4]}", picture, global_step=trainer.global_step)
