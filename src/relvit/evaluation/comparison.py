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

from relvit.config.checks import check_config
from relvit.errors import ConfigError, MissingFileError
from relvit.runs.checkpoints import read_checkpoint, state_dict_of
from relvit.runs.distributed import is_rank_zero
from relvit.runs.files import write_json, write_text

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
    from relvit.training.run import build

    started = time.time()
    spec = cfg.comparison
    out_dir = Path(cfg.paths.output_dir)
    user = [o for o in HydraConfig.get().overrides.task if not o.lstrip("+~").startswith(JOB_ONLY)]
    check_arms(spec)

    def phase(name: str, overrides: list[str], extra: tuple[str, ...] = ()) -> DictConfig:
        # the command line's overrides last, so that a shorter budget given there applies to every phase
        return phase_config([*overrides, *extra, *user, f"paths.output_dir={out_dir / name}"])

    def run(name: str, overrides: list[str], extra: tuple[str, ...] = ()) -> dict[str, Any]:
        done = out_dir / name / "metrics.json"
        if spec.get("resume") and done.is_file():  # a finished phase of an interrupted job is read, not rerun
            return json.loads(done.read_text())
        return train(phase(name, overrides, extra))

    # every phase is checked before the first trains (an arm from the pre-trained encoder differs from
    # its twin only in its pretrained file, which does not exist yet, so the arms from scratch stand in)
    check_config(phase("pretrain", list(spec.pretrain)))
    for budget, budget_overrides in spec.budgets.items():
        for arm, arm_spec in spec.arms.items():
            if not arm_spec.pretrained:
                check_config(phase(f"{budget}/{arm}", [*spec.finetune, *arm_spec.overrides], tuple(budget_overrides)))
    pretrain = run("pretrain", list(spec.pretrain))
    best = own_best(out_dir / "pretrain", pretrain.get("best_checkpoint"))
    result: dict[str, Any] = {"seed": int(cfg.seed), "pretrain": pretrain.get("val", {}), "frozen": {}, "finetune": {},
                              "grid": {}, "pretrained_arm": next(a for a, arm in spec.arms.items() if arm.pretrained),
                              "random_arm": next(a for a, arm in spec.arms.items() if not arm.pretrained),
                              "complete": False}
    earlier = out_dir / JOB_RESULT
    if spec.get("resume") and earlier.is_file():
        result["frozen"] = json.loads(earlier.read_text()).get("frozen", {})
    frozen_cfg = phase_config([*spec.pretrain, *user, f"paths.output_dir={out_dir / 'pretrain'}"])
    for encoder in ("pretrained", "random"):
        if encoder in result["frozen"]:
            continue
        L.seed_everything(int(cfg.seed), workers=True, verbose=False)
        built = build(frozen_cfg)  # the random encoder: the initialisation pre-training started from
        if encoder == "pretrained":
            built.module.load_state_dict(state_dict_of(read_checkpoint(best)))
        device = "cuda" if torch.cuda.is_available() and str(frozen_cfg.trainer.accelerator) != "cpu" else "cpu"
        metrics = frozen_eval(built.module.backbone, built.datamodule, ["knn", "linear"], str(spec.features),
                              built.module.task.add_pos_embed, knn=OmegaConf.to_container(spec.knn),  # type: ignore[arg-type]
                              linear=OmegaConf.to_container(spec.linear), device=device)  # type: ignore[arg-type]
        result["frozen"][encoder] = {k: v for split in metrics.values() for k, v in split.items()}
    write_json(out_dir / JOB_RESULT, result)  # what is done so far: an interrupted job still leaves it
    for budget, budget_overrides in spec.budgets.items():
        result["finetune"][budget], result["grid"][budget] = {}, {}
        for arm, arm_spec in spec.arms.items():
            start = (f"pretrained={best}",) if arm_spec.pretrained else ()
            tried = {lr: run(f"{budget}/{arm}/lr{lr:g}", [*spec.finetune, *arm_spec.overrides],
                             (*budget_overrides, f"optimizer.lr={lr}", *start)) for lr in spec.lrs}
            result["grid"][budget][arm] = {f"{lr:g}": {**summary.get("val", {}), **summary.get("test", {})}
                                           for lr, summary in tried.items()}
            chosen = select_on_val(tried)
            summary = tried[chosen]
            result["finetune"][budget][arm] = {**summary.get("test", summary.get("val", {})), "lr": chosen,
                                               "val/acc": summary.get("val", {}).get("val/acc")}
        write_json(out_dir / JOB_RESULT, result)
    result["wall_s"], result["complete"] = round(time.time() - started, 1), True
    write_json(out_dir / JOB_RESULT, result)
    return {"task": "comparison", "output_dir": str(out_dir), "monitor": None, "comparison": result}


def own_best(phase_dir: Path, recorded: Any) -> str:
    """The pre-training checkpoint the arms start from: the file of the name ``metrics.json`` recorded,
    in this job's own ``pretrain/checkpoints/``. A resumed job reads a ``metrics.json`` it may not have
    written (a sweep dir copied, moved or shared), so the path in it is never followed elsewhere."""
    name = Path(str(recorded)).name if isinstance(recorded, str) else ""
    best = phase_dir / "checkpoints" / name
    if not name.endswith(".ckpt") or best.is_symlink() or not best.is_file():
        raise MissingFileError(f"{phase_dir / 'metrics.json'} names best_checkpoint={recorded!r}, but this job's "
                               f"{phase_dir / 'checkpoints'} holds no such checkpoint: remove {phase_dir} to pre-train again")
    return str(best)


def check_arms(spec: DictConfig) -> None:
    """``comparison.arms`` and ``comparison.lrs`` must name something to run, before any work starts."""
    arms = spec.get("arms")
    if not arms or any(set(a) != {"pretrained", "overrides"} for a in arms.values()):
        raise ConfigError(f"comparison.arms={OmegaConf.to_container(arms) if arms else arms!r} is invalid: map each "
                          "arm name to {pretrained: true|false, overrides: [...]}")
    if not any(a.pretrained for a in arms.values()) or all(a.pretrained for a in arms.values()):
        raise ConfigError("comparison.arms is invalid: at least one arm starts from the pre-trained encoder "
                          "(pretrained: true), and at least one does not (the first of each is compared)")
    lrs = spec.get("lrs")
    if not lrs or any(isinstance(lr, bool) or not isinstance(lr, (int, float)) or lr <= 0 for lr in lrs):
        raise ConfigError(f"comparison.lrs={lrs!r} is invalid: a list of one or more positive learning rates")


def select_on_val(tried: dict[float, dict[str, Any]]) -> float:
    """The learning rate whose run reached the highest validation accuracy (the first of a tie)."""
    return max(tried, key=lambda lr: tried[lr].get("val", {}).get("val/acc", float("-inf")))


def _cell(values: list[float]) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.4f} ± {std:.4f}"


def table_rows(results: list[dict[str, Any]]) -> list[list[str]]:
    """Header and rows of the table: per label budget, every arm's test accuracy (at the learning rate
    chosen on validation), its validation accuracy and the chosen rates; then the frozen pre-trained and
    randomly initialised encoders' kNN and linear accuracies and the pre-training's pretext accuracies.
    The first pre-trained arm is compared with each other arm: the differences are taken per seed."""
    n = len(results)
    budgets = [b for b in (results[0]["finetune"] if results else []) if all(b in r["finetune"] for r in results)]
    arms = list(results[0]["finetune"][budgets[0]]) if budgets else ["relvit", "scratch"]
    ours = results[0].get("pretrained_arm", arms[0]) if results else arms[0]
    others = [a for a in arms if a != ours]
    theirs = results[0].get("random_arm", others[0] if others else None) if results else None
    titles = {ours: f"{ours} (pre-trained encoder)", theirs: f"{theirs} (its random init)"} if theirs else {}
    rows = [["measure", *(f"{titles.get(a, a)}, n={n}" for a in arms), *(f"{ours} − {a}" for a in others)]]

    def add(name: str, cells: dict[str, list[float]], fmt: Callable[[list[float]], str] = _cell) -> None:
        diffs = [_cell([x - y for x, y in zip(cells[ours], cells[a])]) if cells.get(ours) and cells.get(a) else "-"
                 for a in others]
        rows.append([name, *(fmt(cells[a]) if a in cells else "-" for a in arms), *diffs])

    for budget in budgets:
        first = results[0]["finetune"][budget][ours]
        key = next((k for k in first if k.startswith("test/") and k.endswith("/acc")), "test/acc")
        if key not in first:
            key = "val/acc"
        add(f"fine-tuning {key}, labels {budget}", {a: [r["finetune"][budget][a][key] for r in results] for a in arms})
        if key != "val/acc":
            add(f"fine-tuning val/acc (selects), labels {budget}",
                {a: [r["finetune"][budget][a]["val/acc"] for r in results] for a in arms})
        lrs = {a: [r["finetune"][budget][a]["lr"] for r in results] for a in arms}
        rows.append([f"fine-tuning lr chosen on val, labels {budget}", *(", ".join(f"{lr:g}" for lr in lrs[a]) for a in arms),
                     *("-" for _ in others)])
    names = sorted({k for r in results for k in r["frozen"].get("pretrained", {}) if "_acc" in k})
    for name in names:
        frozen = {ours: [r["frozen"]["pretrained"][name] for r in results]}
        if theirs:
            frozen[theirs] = [r["frozen"]["random"][name] for r in results]
        add(f"frozen {name}", frozen)
    for name in sorted({k for r in results for k in r["pretrain"] if k.endswith("_acc")}):
        add(f"pre-training {name}", {ours: [r["pretrain"][name] for r in results]})
    walls = [r["wall_s"] for r in results if "wall_s" in r]
    if walls:
        add("wall time per seed (s)", {ours: walls})
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
    partial = [str(r["seed"]) for r in results if not r.get("complete", True)]
    note = f"; PARTIAL: seeds {', '.join(partial)} unfinished, only the budgets every seed finished" if partial else ""
    write_text(Path(sweep_dir) / f"{TABLE}.md", f"# RelViT vs scratch ({sweep_dir}; seeds {seeds}; mean ± std{note})\n\n"
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
