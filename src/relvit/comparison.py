"""RelViT against training from scratch (``experiment=relvit_vs_scratch``).

Each job of the sweep is one seed: RelViT pre-training, kNN and linear evaluation of the pre-trained
and of a randomly initialised encoder, then for every label budget fine-tuning from the pre-trained
encoder and from scratch with the same fine-tuning config. The sweep dir collects the jobs into one
table (mean and standard deviation over seeds per cell), ``relvit_vs_scratch.md`` and ``.csv``;
``python -m relvit.comparison <sweep dir>`` rebuilds it.
"""
from __future__ import annotations

import csv
import io
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import lightning as L
import torch
from hydra import compose
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from relvit.checkpoints import read_checkpoint, state_dict_of
from relvit.config_checks import check_config
from relvit.distributed import is_rank_zero
from relvit.run_files import write_json, write_text

#: What each job leaves in its dir, and the table's files in the sweep dir.
JOB_RESULT = "comparison.json"
TABLE = "relvit_vs_scratch"
#: Overrides of the job's command line that must not reach its phases.
JOB_ONLY = ("comparison", "hydra", "finetune", "pretrained", "paths.output_dir")


def phase_config(overrides: list[str]) -> DictConfig:
    """The train.py config of one phase, composed as its command line would compose it."""
    return compose(config_name=HydraConfig.get().job.config_name, overrides=[*overrides, "++comparison=null"])


def compare_one_seed(cfg: DictConfig, train: Callable[[DictConfig], dict[str, Any]]) -> dict[str, Any]:
    """Run one job of the comparison into ``cfg.paths.output_dir`` and write its ``comparison.json``."""
    from relvit.probes.frozen import frozen_eval
    from relvit.training import build

    started = time.time()
    spec = cfg.comparison
    out_dir = Path(cfg.paths.output_dir)
    user = [o for o in HydraConfig.get().overrides.task if not o.lstrip("+~").startswith(JOB_ONLY)]

    def phase(name: str, overrides: list[str], extra: tuple[str, ...] = ()) -> DictConfig:
        # the command line's overrides last, so that a shorter budget given there applies to every phase
        return phase_config([*overrides, *extra, *user, f"paths.output_dir={out_dir / name}"])

    def run(name: str, overrides: list[str], extra: tuple[str, ...] = ()) -> dict[str, Any]:
        return train(phase(name, overrides, extra))

    # every phase is checked before the first trains (the fine-tuning from the pre-trained encoder
    # differs from the one from scratch only in its pretrained file, which does not exist yet)
    check_config(phase("pretrain", list(spec.pretrain)))
    for budget, budget_overrides in spec.budgets.items():
        check_config(phase(f"{budget}/scratch", list(spec.finetune), tuple(budget_overrides)))
    pretrain = run("pretrain", list(spec.pretrain))
    best = pretrain["best_checkpoint"]
    result: dict[str, Any] = {"seed": int(cfg.seed), "pretrain": pretrain.get("val", {}), "frozen": {}, "finetune": {}}
    frozen_cfg = phase_config([*spec.pretrain, *user, f"paths.output_dir={out_dir / 'pretrain'}"])
    for encoder in ("pretrained", "random"):
        L.seed_everything(int(cfg.seed), workers=True, verbose=False)
        built = build(frozen_cfg)  # the random encoder: the initialisation pre-training started from
        if encoder == "pretrained":
            built.module.load_state_dict(state_dict_of(read_checkpoint(best)))
        device = "cuda" if torch.cuda.is_available() and str(frozen_cfg.trainer.accelerator) != "cpu" else "cpu"
        metrics = frozen_eval(built.module.backbone, built.datamodule, ["knn", "linear"], str(spec.features),
                              built.module.task.add_pos_embed, knn=OmegaConf.to_container(spec.knn),  # type: ignore[arg-type]
                              linear=OmegaConf.to_container(spec.linear), device=device)  # type: ignore[arg-type]
        result["frozen"][encoder] = {k: v for split in metrics.values() for k, v in split.items()}
    for budget, budget_overrides in spec.budgets.items():
        scratch = run(f"{budget}/scratch", list(spec.finetune), tuple(budget_overrides))
        relvit = run(f"{budget}/relvit", list(spec.finetune), (*budget_overrides, f"pretrained={best}"))
        result["finetune"][budget] = {"relvit": relvit.get("test", relvit.get("val", {})),
                                      "scratch": scratch.get("test", scratch.get("val", {}))}
    result["wall_s"] = round(time.time() - started, 1)
    write_json(out_dir / JOB_RESULT, result)
    return {"task": "comparison", "output_dir": str(out_dir), "monitor": None, "comparison": result}


def _cell(values: list[float]) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.4f} ± {std:.4f}"


def table_rows(results: list[dict[str, Any]]) -> list[list[str]]:
    """Header and rows of the table: fine-tuning test accuracy per label budget and arm, then the
    frozen encoders' kNN and linear accuracies and the pre-training's pretext accuracies."""
    n = len(results)
    rows = [["measure", f"RelViT (pre-trained, n={n})", f"scratch / random init (n={n})", "difference"]]

    def add(name: str, a: list[float], b: list[float] | None) -> None:
        diff = [x - y for x, y in zip(a, b)] if b else []
        rows.append([name, _cell(a), _cell(b or []), _cell(diff) if b else "-"])

    budgets = list(results[0]["finetune"]) if results else []
    for budget in budgets:
        key = next((k for k in results[0]["finetune"][budget]["relvit"] if k.endswith("/acc")), "test/acc")
        add(f"fine-tuning {key}, labels {budget}", [r["finetune"][budget]["relvit"][key] for r in results],
            [r["finetune"][budget]["scratch"][key] for r in results])
    names = sorted({k for r in results for k in r["frozen"]["pretrained"] if "_acc" in k})
    for name in names:
        add(f"frozen {name}", [r["frozen"]["pretrained"][name] for r in results], [r["frozen"]["random"][name] for r in results])
    for name in sorted({k for r in results for k in r["pretrain"] if k.endswith("_acc")}):
        add(f"pre-training {name}", [r["pretrain"][name] for r in results], None)
    rows.append(["wall time per seed (s)", _cell([r["wall_s"] for r in results]), "-", "-"])
    return rows


def write_table(sweep_dir: Path) -> list[list[str]] | None:
    """(Re)write ``relvit_vs_scratch.md`` and ``.csv`` from the finished jobs of ``sweep_dir``."""
    results = [json.loads(p.read_text()) for p in sorted(Path(sweep_dir).glob(f"*/{JOB_RESULT}"))]
    if not results:
        return None
    rows = table_rows(results)
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    write_text(Path(sweep_dir) / f"{TABLE}.csv", buffer.getvalue())
    md = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])] + ["| " + " | ".join(r) + " |" for r in rows[1:]]
    seeds = ", ".join(str(r["seed"]) for r in results)
    write_text(Path(sweep_dir) / f"{TABLE}.md", f"# RelViT vs scratch ({sweep_dir}; seeds {seeds}; mean ± std)\n\n"
               + "\n".join(md) + "\n")
    return rows


class ComparisonTable(Callback):
    """Rewrites the sweep's table after every job and at the end of the sweep."""

    def on_job_end(self, config: DictConfig, job_return: Any = None, **kwargs: Any) -> None:
        if config.hydra.mode == RunMode.MULTIRUN and is_rank_zero():
            write_table(Path(config.hydra.sweep.dir))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if is_rank_zero() and Path(config.hydra.sweep.dir).is_dir():
            rows = write_table(Path(config.hydra.sweep.dir))
            if rows:
                print("\n" + "\n".join("  ".join(r) for r in rows), flush=True)


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print("usage: python -m relvit.comparison <sweep_dir>   (a multirun/<time> folder)", file=sys.stderr)
        return 2
    if write_table(Path(argv[0])) is None:
        print(f"error: no job of {argv[0]} has finished ({JOB_RESULT} missing)", file=sys.stderr)
        return 2
    print((Path(argv[0]) / f"{TABLE}.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
