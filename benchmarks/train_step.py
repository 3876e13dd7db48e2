"""How close to the hardware one RelViT training step runs: images/s, peak memory, model FLOPs per image,
achieved FLOP/s, and that rate as a fraction of a large matrix multiplication's FLOP/s measured on the
same device in the same run (the practical roofline: the fraction means the same on any machine).

For each backbone, image size and task (upstream, joint) it times the project's step (forward, backward,
AdamW step on random images; SDPA attention, bf16 autocast and fused AdamW on a CUDA GPU with bfloat16,
fp32 on the CPU) and, next to it, the same step assembled the plain way the method describes: a separate
query/key/value module per relation class, explicit softmax attention, fp32, unfused AdamW. FLOPs are
counted with torch.utils.flop_counter on the project's step (the plain one does the same model maths plus
its unused value maps). Step times are medians over the timed steps.

    python benchmarks/train_step.py             # the five configurations of docs/performance.md
    python benchmarks/train_step.py --tiny      # one small size, two steps: a check that it runs
"""
from __future__ import annotations

import argparse
import math
import os
import resource
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))  # benchmark the working tree, installed or not

from relvit.model.hardware import compile_model, fused_on_cuda, resolve_precision  # noqa: E402
from relvit.model.module import RelViTModule  # noqa: E402
from relvit.model.task import TaskSpec  # noqa: E402


@dataclass(frozen=True)
class Setting:
    """One row group: a backbone on a dataset config (image and patch size), with a batch size."""

    backbone: str
    dataset: str
    batch: int
    extra: tuple[str, ...] = ()


FULL = (
    Setting("vit_small", "cifar10", 256),  # 32 px, 4 px patches
    Setting("vit_small", "cifar10_224", 64),  # 224 px, 32 px patches
    Setting("swin_tiny", "cifar10_224", 64),
    Setting("t2t_vit_14", "cifar10_224", 64),
)
TINY = (Setting("vit_tiny", "cifar10", 8, ("backbone.depth=2",)),)
TASKS = ("upstream", "joint")


class PlainRelationHead(nn.Module):
    """The relation head as the method notes describe it: per class its own query, key and value maps
    (the value map is built and unused, as in the original), scores q_k . k_k / sqrt(d)."""

    def __init__(self, embed_dim: int, classes: int = 9):
        super().__init__()
        self.head_dim = embed_dim // classes
        self.heads = nn.ModuleList(
            nn.ModuleDict({n: nn.Linear(embed_dim, self.head_dim, bias=False) for n in ("query", "key", "value")})
            for _ in range(classes)
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, N, D] -> scores [B, 9, N, N]."""
        scores = []
        for head in self.heads:
            q, k = head["query"](tokens), head["key"](tokens)
            head["value"](tokens)
            scores.append(q @ k.transpose(-1, -2) / math.sqrt(self.head_dim))
        return torch.stack(scores, dim=1)


def build_module(setting: Setting, task: str, plain: bool, device: torch.device) -> tuple[RelViTModule, int]:
    """The task's module from the project's configs, on ``device`` (``plain`` swaps in the plain parts),
    and the image size it takes."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"backbone={setting.backbone}", f"dataset={setting.dataset}",
                                          f"task={task}", *setting.extra])
    backbone = instantiate(cfg.backbone)
    module = RelViTModule(backbone, TaskSpec.from_config(OmegaConf.to_container(cfg.task, resolve=True)), 10,
                          instantiate(cfg.optimizer), instantiate(cfg.scheduler))
    if plain:
        for part in module.modules():
            if hasattr(part, "fused_attn"):  # timm's attention: explicit softmax(q k^T) v instead of SDPA
                part.fused_attn = False
        module.relation_head = PlainRelationHead(backbone.embed_dim)
    return module.to(device).train(), int(cfg.dataset.image_size)


def make_step(module: RelViTModule, images: torch.Tensor, labels: torch.Tensor, plain: bool, device: torch.device):
    """One training step as a closure: forward and losses (autocast where the run would use it),
    backward, optimiser step."""
    factory = module.optimizer_factory
    optimizer = factory(module.parameters()) if plain else fused_on_cuda(factory, device)(module.parameters())
    bf16 = not plain and resolve_precision(device.type if device.type == "cpu" else "gpu") == "bf16-mixed"

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = module.compute_losses(images, labels)
        out["loss"].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(device: torch.device, size: int, repeats: int = 5) -> float:
    """FLOP/s of a size x size matmul in the step's compute dtype (bf16 on CUDA, fp32 on the CPU)."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    a @ b
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times)


def measure(setting: Setting, task: str, plain: bool, device: torch.device, steps: int,
            compiled: bool = False) -> dict[str, float]:
    """img/s (median step), peak memory (GiB) and model FLOPs per image (counted on the eager module,
    the same maths as the compiled one); ``compiled`` compiles the backbone and heads as ``compile=true``."""
    torch.manual_seed(0)
    module, size = build_module(setting, task, plain, device)
    if compiled:
        flops = measure(setting, task, plain, device, 0)["flops_per_image"]
        compile_model(module)
    images = torch.randn(setting.batch, 3, size, size, device=device)
    labels = torch.randint(0, 10, (setting.batch,), device=device)
    step = make_step(module, images, labels, plain, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    counter = FlopCounterMode(display=False)
    if compiled:
        for _ in range(2):  # compilation, then one more warm-up
            step()
    else:
        with counter:  # the warm-up step, counted
            step()
        flops = counter.get_total_flops()
    times = []
    for _ in range(steps):
        sync(device)
        start = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"img_s": setting.batch / statistics.median(times) if times else float("nan"), "peak_gib": peak / 2**30,
            "flops_per_image": flops / setting.batch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="one small size, two steps")
    parser.add_argument("--steps", type=int, default=None, help="timed steps after the warm-up (default 3, tiny 2)")
    parser.add_argument("--matmul-size", type=int, default=None, help="side of the roofline matmul (4096 CPU, 8192 GPU)")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    steps = args.steps or (2 if args.tiny else 3)
    settings = TINY if args.tiny else FULL
    matmul = matmul_rate(device, args.matmul_size or (1024 if args.tiny else 8192 if device.type == "cuda" else 4096))
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__} on {where}; load average {os.getloadavg()[0]:.2f}; "
          f"matmul {'bf16' if device.type == 'cuda' else 'fp32'} {matmul / 1e12:.3f} TFLOP/s; median of {steps} steps")
    memory = "peak GiB" if device.type == "cuda" else "peak RSS GiB (process)"
    header = (f"| backbone | size / patch | batch | task | img/s | {memory} | GFLOP/img | TFLOP/s | of matmul "
              f"| plain img/s | plain {memory} | speed-up |")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for setting in settings:
        for task in TASKS:
            ours = measure(setting, task, False, device, steps)
            plain = measure(setting, task, True, device, steps)
            rate = ours["flops_per_image"] * ours["img_s"]
            size = compose_size(setting)
            print(f"| {setting.backbone} | {size} | {setting.batch} | {task} | {ours['img_s']:.1f} | {ours['peak_gib']:.2f} "
                  f"| {ours['flops_per_image'] / 1e9:.2f} | {rate / 1e12:.3f} | {rate / matmul:.0%} "
                  f"| {plain['img_s']:.1f} | {plain['peak_gib']:.2f} | {ours['img_s'] / plain['img_s']:.2f}x |", flush=True)
    print(f"load average {os.getloadavg()[0]:.2f} after the timings")


def compose_size(setting: Setting) -> str:
    """``224 / 32`` from the dataset config."""
    cfg = OmegaConf.load(REPO / "conf" / "dataset" / f"{setting.dataset}.yaml")
    return f"{cfg.image_size} / {cfg.patch_size}"


if __name__ == "__main__":
    main()
