"""Every command in the README's code blocks, run as a user would, with a tiny budget appended.

Each command has a plan below: the exit code the README promises, the overrides that shrink it
(appended, so they win over the command's own values), and how it is run. A README command without
a plan, or a plan whose command left the README, fails ``test_every_readme_command_has_a_plan``.
Commands that need hardware this machine lacks (CUDA, SLURM) are run where it is present; without
it, a GPU command must stop with exit 2 and say so, and a SLURM command is skipped with the reason.
"""
from __future__ import annotations

import os
import re
import runpy
import shlex
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from conftest import REPO, subprocess_env

README = REPO / "README.md"

# A run that goes through every stage in seconds; the command's own choices (task, dataset,
# backbone group, launcher) are kept, only sizes and lengths shrink.
BUDGET = [
    "backbone.depth=1",
    "data.batch_size=16",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "trainer.enable_model_summary=false",
]
SMALL_VIT = ["backbone=vit_tiny", "backbone.embed_dim=36", "backbone.num_heads=3"]
HAS_CUDA = torch.cuda.is_available()


def readme_commands(text: str) -> list[tuple[str, str | None]]:
    """(command, output the README shows for it) for every command of the README's code blocks.

    ``bash`` blocks: every non-comment line, continuation lines joined, trailing comments removed.
    Plain blocks: lines starting with ``$ ``, followed by the output the README prints for them.
    """
    found: list[tuple[str, str | None]] = []
    for lang, body in re.findall(r"```(\w*)\n(.*?)```", text, re.S):
        body = body.replace("\\\n", " ")
        if lang == "bash":
            for line in body.splitlines():
                command = _without_comment(line)
                if command:
                    found.append((command, None))
        elif lang == "":
            lines = body.splitlines()
            for i, line in enumerate(lines):
                if line.startswith("$ "):
                    found.append((_without_comment(line[2:]), lines[i + 1] if i + 1 < len(lines) else None))
    return found


def _without_comment(line: str) -> str:
    """``line`` up to a ``#`` that starts a shell comment, with runs of spaces made one."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            line = line[:i]
            break
    return re.sub(r"\s+", " ", line).strip()


@dataclass
class Plan:
    """How one README command is run here."""

    expect: int = 0
    budget: list[str] = field(default_factory=lambda: list(BUDGET))
    subprocess: bool = False  # launchers and process groups run as separate processes
    needs_gpu: bool = False  # without CUDA: exit 2 naming the missing GPU
    no_gpu_error: str = "error: trainer.accelerator='gpu' is invalid: this machine has no CUDA GPU"
    needs: str | None = None  # a program that must be on PATH (SLURM), else skipped
    shell: str | None = None  # a shell command: run in "repo" (this checkout) or "new_git" (a fresh git repo)
    timeout: int = 300
    imports: tuple[str, ...] = ()  # modules of an extra (EXTRAS), else skipped, naming the pip install line


#: The modules of each optional extra that README commands use, and the extra that installs them.
EXTRAS = {
    "wandb": "trackers", "mlflow": "trackers", "hydra_plugins.hydra_joblib_launcher": "cluster",
    "hydra_plugins.hydra_submitit_launcher": "cluster", "hydra_plugins.hydra_optuna_sweeper": "cluster",
}


def missing_extra(modules: tuple[str, ...]) -> str | None:
    """Why a command cannot run here (an extra's module that does not import), or None."""
    import importlib

    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError:
            return f"needs pip install -e '.[{EXTRAS[module]}]' ({module} is not installed)"
    return None


RUNS = Plan(budget=[*BUDGET, *SMALL_VIT])
JOBLIB = ("hydra_plugins.hydra_joblib_launcher",)
PLANS: dict[str, Plan] = {
    "pip install -e . && python train.py experiment=quickstart": Plan(budget=[
        *BUDGET, "backbone.embed_dim=36", "backbone.num_heads=3", 'finetune=["task=downstream","trainer.max_epochs=1"]']),
    "pip install -e '.[test,cluster,trackers]' && python -m pytest -q": Plan(),  # checked against .ci/run, below
    "pip install -e '.[trackers]'": Plan(budget=[]),  # its extras must exist, below
    "pip install -e '.[dev]' && pre-commit install": Plan(budget=[], needs="pre-commit", shell="new_git"),
    "pip install -e '.[test]' && ruff check . && mypy src/relvit": Plan(budget=[], shell="repo"),
    "python train.py 'logger=[tensorboard,wandb,mlflow]'": Plan(budget=RUNS.budget, imports=("wandb", "mlflow")),
    "python train.py logger=wandb logger.wandb.project=my_project logger.wandb.offline=true":
        Plan(budget=RUNS.budget, imports=("wandb",)),
    "python -m relvit.export ckpt_path=<ckpt> out=exports/backbone": Plan(budget=[]),
    "python train.py task=upstream": RUNS,
    "python train.py task=downstream pretrained=<run>/checkpoints/best.ckpt": RUNS,
    "python train.py task=joint": RUNS,
    "python train.py task=upstream 'finetune=[\"task=downstream\"]'": RUNS,
    "python train.py backbone=vit_tiny dataset=digits trainer.max_epochs=5 optimizer.lr=1e-3 seed=1": RUNS,
    "python train.py resume=<run>/checkpoints/last.ckpt": Plan(budget=[]),  # the run's own config
    "python train.py debug=fast": RUNS,
    "python train.py resume=<run>/checkpoints/last.ckpt extend_to_epochs=200": Plan(budget=["extend_to_epochs=3"]),
    "python train.py -m optimizer.lr=1e-4,5e-4 seed=1,2": RUNS,
    "python train.py dataset.patch_size=5": Plan(expect=2),
    "python train.py task=upstream trainer=ddp": Plan(budget=[*BUDGET, *SMALL_VIT], needs_gpu=True),
    "python train.py task=joint trainer=ddp trainer.accelerator=cpu trainer.devices=2 trainer.precision=32-true":
        Plan(budget=[*BUDGET, *SMALL_VIT], subprocess=True),
    "torchrun --standalone --nproc-per-node=4 train.py trainer=ddp trainer.devices=4":
        Plan(budget=[*BUDGET, *SMALL_VIT], subprocess=True, needs_gpu=True),
    "srun python train.py experiment=upstream_cifar10 trainer=ddp trainer.num_nodes=2 trainer.devices=4":
        Plan(needs="srun"),
    "python train.py sweep=digits_seeds_lr": Plan(budget=[*BUDGET, *SMALL_VIT, "seed=1", "optimizer.lr=5e-4"]),
    "python train.py -m hydra/launcher=joblib hydra.launcher.n_jobs=2 optimizer.lr=1e-4,5e-4":
        Plan(budget=[*BUDGET, *SMALL_VIT], subprocess=True, imports=JOBLIB),
    "python train.py -m hydra/launcher=joblib hydra.launcher.n_jobs=4 trainer=gpu_per_job seed=1,2,3,4":
        Plan(budget=[*BUDGET, *SMALL_VIT, *([] if HAS_CUDA else ["seed=1", "hydra.launcher.n_jobs=1"])],
             subprocess=True, needs_gpu=True, imports=JOBLIB),
    "python train.py -m hydra/launcher=submitit_local seed=1,2": Plan(budget=[*BUDGET, *SMALL_VIT], subprocess=True,
                                                                       imports=("hydra_plugins.hydra_submitit_launcher",)),
    "python train.py -m hydra/launcher=slurm hydra.launcher.partition=gpu hydra.launcher.nodes=2 "
    "hydra.launcher.gpus_per_node=4 trainer=ddp trainer.num_nodes=2 trainer.devices=4 seed=1,2": Plan(needs="sbatch"),
    "python train.py sweep=paper_grid hydra.launcher.partition=gpu": Plan(needs="sbatch"),
    "python train.py -m hparams_search=digits_finetune": Plan(budget=[*BUDGET, *SMALL_VIT, "hydra.sweeper.n_trials=2",
                                                                      "hydra.sweep.dir=multirun/optuna"],
                                                              imports=("hydra_plugins.hydra_optuna_sweeper",)),
    "python -m relvit.summary multirun/<time>": Plan(budget=[]),
    "python evaluate.py ckpt_path=outputs/upstream/runs/<time>/finetune/checkpoints/best.ckpt": Plan(budget=[]),
    "python evaluate.py ckpt_path=<ckpt> data.eval_batch_size=64 'splits=[test]'": Plan(budget=[]),
    "mkdir -p data/cifar10 && tar -xJf /path/to/cifar10-train-jpeg.tar.xz -C data/cifar10": Plan(budget=[]),
    "python train.py dataset=cifar10 backbone=vit_tiny task=upstream": Plan(budget=[*BUDGET, *SMALL_VIT[1:],
                                                                                 "data.batch_size=4"]),
    "python train.py dataset=image_folder dataset.root=/path/to/folders": Plan(budget=[*BUDGET, *SMALL_VIT,
                                                                                       "data.batch_size=4"]),
    "python benchmarks/data_pipeline.py": Plan(budget=["--images", "16", "--batch-size", "8", "--images-224", "4",
                                                       "--batch-size-224", "2", "--reference-images", "4", "2",
                                                       "--repeats", "1", "--data-dir", "{jpegs}"]),
    "python benchmarks/epoch_throughput.py": Plan(budget=["--batches", "1", "--batch-size", "4", "--batch-size-224", "2",
                                                          "--images-224", "40", "--repeats", "1", "--data-dir", "{jpegs}"]),
    "python benchmarks/param_counts.py": Plan(budget=[]),
    "python benchmarks/train_step.py --tiny": Plan(budget=[]),
    "python benchmarks/train_step.py": Plan(budget=["--tiny"]),
    # every step of the dry run is tested in tests/test_benchmarks.py; here the command itself, one quick step
    "python benchmarks/gpu_acceptance.py": Plan(budget=["--dry-run", "--only", "optimizer", "--out", "{tmp}/acceptance"]),
    "python train.py compile=true": RUNS,
    "python evaluate.py ckpt_path=<ckpt> protocol=knn": Plan(budget=[]),
    "python evaluate.py ckpt_path=<ckpt> protocol=linear": Plan(budget=["linear.steps=20"]),
    "python evaluate.py ckpt_path=<ckpt> protocol=knn features=mean data.labels_per_class=10": Plan(budget=[]),
    "python train.py task=downstream pretrained=<ckpt> data.label_fraction=0.1": RUNS,
    "python -m relvit.visualize ckpt_path=<ckpt>": Plan(budget=[]),
    "python train.py experiment=relvit_vs_scratch": Plan(budget=[
        *BUDGET, *SMALL_VIT, "seed=1", 'comparison.finetune=["task=downstream","trainer.max_epochs=1"]',
        "comparison.linear.steps=20"]),
    "python train.py trainer.precision=32-true": RUNS,
    "python train.py dataset=image_folder dataset.root=/path/to/folders data.decode=gpu": Plan(
        budget=[*BUDGET, *SMALL_VIT, "data.batch_size=4"], needs_gpu=True,
        no_gpu_error="error: data.decode='gpu' is invalid: this machine has no CUDA device"),
    "python train.py dataset=image_folder dataset.root=/path/to/folders data.decode=cpu": Plan(
        budget=[*BUDGET, *SMALL_VIT, "data.batch_size=4"]),
    "python docs/generate.py backbones": Plan(budget=["--tiny", "--docs-dir", "{tmp}"]),
}

COMMANDS = readme_commands(README.read_text())


def test_every_readme_command_has_a_plan():
    commands = [command for command, _ in COMMANDS]
    assert sorted(set(commands) - set(PLANS)) == [], "README commands without a plan in tests/test_readme.py"
    assert sorted(set(PLANS) - set(commands)) == [], "plans for commands the README no longer has"


def test_the_readme_test_command_is_what_ci_runs():
    (install_and_test,) = [c for c in PLANS if "pytest" in c]
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    install, test = (part.strip() for part in install_and_test.split("&&"))
    assert install in ci and test in ci and ci.index(install) < ci.index(test)


def test_every_python_example_is_tested():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) == 2 and any("relvit.model.ssl" in b for b in blocks) and any("timm" in b for b in blocks)


def test_the_python_example_holds():
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", README.read_text(), re.S) if "relvit.model.ssl" in b]
    names: dict = {}
    exec(block, names)  # the imports and calls of the example run as written
    relations = names["relation_targets"](3)
    assert int(relations[0, 1]) == 3 and names["RELATION_CLASSES"][3] == "LC"
    assert names["position_targets"](3).tolist() == list(range(9))


# ---------------------------------------------------------------- a world for the placeholders


def _make_image_tree(root: Path, splits: tuple[str, ...], suffix: str, classes: int, per_class: int = 4) -> None:
    """``root/<split>/class<c>/<k><suffix>``: 32 px images of one colour per class."""
    from PIL import Image

    for split in splits:
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(per_class):
                Image.new("RGB", (32, 32), (25 * c, 250 - 25 * c, 9 * k)).save(folder / f"{k:03d}{suffix}")


def _run(args: list[str], cwd: Path, env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """What the README's placeholders stand for: a finished two-phase run, a sweep, an image folder,
    an archive of CIFAR-10 JPEG class folders (and the data it unpacks to)."""
    root = tmp_path_factory.mktemp("readme")
    env = subprocess_env(RELVIT_OUTPUT_DIR=str(root / "outputs"), OMP_NUM_THREADS="1")
    small = [*BUDGET, *SMALL_VIT, "trainer.max_epochs=2"]
    done = _run([sys.executable, str(REPO / "train.py"), "task=upstream", 'finetune=["task=downstream"]', *small],
                root, env)
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = (root / "outputs" / "upstream" / "runs").iterdir()
    done = _run([sys.executable, str(REPO / "train.py"), "-m", "task=downstream", "seed=1,2", *small], root, env)
    assert done.returncode == 0, done.stderr[-3000:]
    (sweep,) = (root / "multirun").iterdir()
    _make_image_tree(root / "folders", ("train", "test"), ".jpg", classes=3)
    _make_image_tree(root / "jpegs", ("train", "test"), ".jpg", classes=10, per_class=4)
    archive = root / "cifar10-train-jpeg.tar.xz"
    with tarfile.open(archive, "w:xz") as tar:
        tar.add(root / "jpegs" / "train", arcname="train")
        tar.add(root / "jpegs" / "test", arcname="test")
    return {"root": root, "run": run, "sweep": sweep, "folders": root / "folders", "archive": archive}


def placeholders(command: str, world: dict[str, Path]) -> str:
    best = world["run"] / "finetune" / "checkpoints" / "best.ckpt"
    for text, value in (("outputs/upstream/runs/<time>", world["run"]), ("<run>", world["run"]), ("<ckpt>", best),
                        ("multirun/<time>", world["sweep"]), ("/path/to/folders", world["folders"]),
                        ("/path/to/cifar10-train-jpeg.tar.xz", world["archive"])):
        command = command.replace(text, str(value))
    return command


def _stage_cifar(cwd: Path, world: dict[str, Path]) -> None:
    """The README's unpack command, run first where its data is used."""
    (unpack,) = [c for c in PLANS if c.startswith("mkdir")]
    done = _run(["bash", "-c", placeholders(unpack, world)], cwd, os.environ.copy())
    assert done.returncode == 0, done.stderr


def _command_params() -> list:
    """The README's commands, those whose extra is not installed skipped (before the world is built)."""
    params = []
    for command, _ in COMMANDS:
        why = missing_extra(PLANS[command].imports) if command in PLANS else None
        params.append(pytest.param(command, marks=[pytest.mark.skip(reason=why)] if why else []))
    return params


@pytest.mark.parametrize("command", _command_params(), ids=lambda c: c[:70])
def test_readme_command(command, world, cli, tmp_path, monkeypatch):
    plan = PLANS[command]
    shown = dict(COMMANDS)[command]
    if "pytest" in command:
        pytest.skip("the test run itself: .ci/run runs it (test_the_readme_test_command_is_what_ci_runs)")
    if plan.needs and not shutil.which(plan.needs):
        pytest.skip(f"needs {plan.needs}, which this machine lacks")
    expect = plan.expect
    if plan.needs_gpu and not HAS_CUDA:
        # torchrun reports a failed rank with 1, a sweep a failed job with 1
        expect = 1 if command.startswith("torchrun") or " -m " in command else 2
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RELVIT_OUTPUT_DIR", str(tmp_path / "outputs"))
    monkeypatch.setenv("RELVIT_DATA_DIR", str(tmp_path / "data"))
    if "dataset=cifar10" in command:
        _stage_cifar(tmp_path, world)
    line = placeholders(command, world)
    if line.startswith("pip install"):
        install, _, line = (part.strip() for part in line.partition("&&"))
        extras = re.fullmatch(r"pip install -e (?:\.|'\.\[([a-z,]+)\]')", install).group(1) or ""
        missing = set(filter(None, extras.split(","))) - set(_extras())
        assert not missing, f"{install}: pyproject.toml has no extra {sorted(missing)}"
        if not line:
            return  # CI installed the project already; what remains is the install line's extras
    if plan.shell:
        cwd = REPO
        if plan.shell == "new_git":
            subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
            shutil.copy(REPO / ".pre-commit-config.yaml", tmp_path)
            cwd = tmp_path
        code, out, err = _shell(line, cwd)
        assert code == plan.expect, f"{line}\nexit {code}\n{out[-2000:]}{err[-2000:]}"
        if plan.shell == "new_git":
            assert (tmp_path / ".git" / "hooks" / "pre-commit").is_file()
        return
    if line.startswith("mkdir"):
        code, out, err = _shell(line, tmp_path)
        assert code == 0, err
        assert sorted(p.name for p in (tmp_path / "data" / "cifar10").iterdir()) == ["test", "train"]
        return
    words = [*shlex.split(line), *(word.format(jpegs=world["root"] / "jpegs", tmp=tmp_path)
                                          for word in plan.budget)]
    code, out, err = _execute(words, plan, tmp_path, cli)
    assert code == expect, f"{line}\nexit {code}, README says {expect}\n{err[-3000:]}"
    if plan.needs_gpu and not HAS_CUDA:
        assert plan.no_gpu_error in err, err[-2000:]
    elif expect == 2:
        message = (out + err).strip().splitlines()
        assert message and message[-1].startswith("error: "), err[-2000:]
    if shown:
        assert shown in out + err
    if code == 0 and words[0] == "python" and words[1] == "train.py":
        _check_train_outputs(words, tmp_path)


def _check_train_outputs(words: list[str], cwd: Path) -> None:
    """A finished run wrote its metrics; a sweep its summary, every job completed; debug=fast nothing."""
    import csv

    if "debug=fast" in words:
        assert not list((cwd / "outputs").rglob("*.ckpt"))
    elif (cwd / "multirun").is_dir():
        (summary,) = (cwd / "multirun").rglob("summary.csv")
        with open(summary) as f:
            rows = list(csv.DictReader(f))
        assert rows and {row["status"] for row in rows} == {"completed"}, rows
        for table in (cwd / "multirun").rglob("relvit_vs_scratch.csv"):
            with open(table) as f:
                cells = [cell for row in csv.DictReader(f) for cell in row.values()]
            assert cells and all(cell.strip() for cell in cells), f"{table} has empty cells"
    else:
        assert list((cwd / "outputs").rglob("metrics.json")), "the run wrote no metrics.json"


def _extras() -> list[str]:
    import tomllib

    return list(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"])


def test_the_export_example_loads_in_timm(world, tmp_path, monkeypatch):
    """The README's timm snippet, on the backbone the README's export command writes."""
    (export,) = [c for c in PLANS if "relvit.export" in c]
    monkeypatch.chdir(tmp_path)
    code, _, err = _in_process(shlex.split(placeholders(export, world))[1:], tmp_path, None)
    assert code == 0, err[-2000:]
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", README.read_text(), re.S) if "timm" in b]
    names: dict = {}
    exec(block, names)
    vit = names["vit"]
    out = vit.forward_features(torch.zeros(1, 3, vit.patch_embed.img_size[0], vit.patch_embed.img_size[1]))
    assert out.shape[0] == 1 and torch.isfinite(out).all()


def _shell(line: str, cwd: Path) -> tuple[int, str, str]:
    done = _run(["bash", "-c", line], cwd, os.environ.copy())
    return done.returncode, done.stdout, done.stderr


def _execute(words: list[str], plan: Plan, cwd: Path, cli) -> tuple[int, str, str]:
    """Run ``python ...`` / ``torchrun ...`` words in this process where it can, else as a child."""
    if words[0] == "torchrun" or plan.subprocess:
        if words[0] == "torchrun":
            words = [sys.executable, "-m", "torch.distributed.run", *words[1:]]
            words = [w if w != "train.py" else str(REPO / "train.py") for w in words]
        else:
            words = [sys.executable, *[str(REPO / w) if w in ("train.py", "evaluate.py") else w for w in words[1:]]]
        done = _run(words, cwd, subprocess_env(OMP_NUM_THREADS="1"), plan.timeout)
        return done.returncode, done.stdout, done.stderr
    assert words[0] == "python", words
    if words[1] in ("train.py", "evaluate.py"):
        return cli(words[1], *words[2:])
    return _in_process(words[1:], cwd, cli)


def _in_process(args: list[str], cwd: Path, cli) -> tuple[int, str, str]:
    """``python -m module ...`` or ``python script.py ...`` in this process."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            if args[0] == "-m":
                sys.argv = [args[1], *args[2:]]
                runpy.run_module(args[1], run_name="__main__", alter_sys=True)
            else:
                sys.argv = [str(REPO / args[0]), *args[1:]]
                runpy.run_path(str(REPO / args[0]), run_name="__main__")
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    finally:
        sys.argv = argv
    return code, out.getvalue(), err.getvalue()


# ---------------------------------------------------------------- the README's own structure


def _prose(text: str) -> str:
    """The README without its code blocks (a ``#`` there is a shell comment, not a heading)."""
    return re.sub(r"```.*?```", "", text, flags=re.S)


def _tables(text: str) -> list[list[list[str]]]:
    """Every table of the README's prose: its rows (the header first), each a list of cells."""
    tables: list[list[list[str]]] = []
    previous_was_row = False
    for line in _prose(text).splitlines():
        is_row = line.startswith("|")
        if is_row:
            cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            if not previous_was_row:
                tables.append([])
            if not all(re.fullmatch(r":?-+:?", cell) for cell in cells):
                tables[-1].append(cells)
        previous_was_row = is_row
    return tables


def test_no_heading_or_table_row_is_written_twice():
    text = README.read_text()
    headings = re.findall(r"^#+ .*$", _prose(text), re.M)
    assert sorted({h for h in headings if headings.count(h) > 1}) == []
    separator = re.compile(r"^\|(\s*:?-+:?\s*\|)+$")
    lines = _prose(text).splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|") and not (i and lines[i - 1].startswith("|")):
            assert i + 1 < len(lines) and separator.match(lines[i + 1]), f"a table without a header row: {line[:60]}"
    for table in _tables(text):
        keys = [row[0] for row in table]
        assert sorted({k for k in keys if keys.count(k) > 1}) == [], f"rows written twice in the table {table[0]}"


def test_the_configuration_table_names_every_config_group_and_option():
    (table,) = [t for t in _tables(README.read_text()) if t[0] == ["group", "options"]]
    rows = {row[0].strip("`"): row[1] for row in table[1:]}
    conf = REPO / "conf"
    groups = {str(p.relative_to(conf)) for p in conf.rglob("*.yaml") if p.parent != conf}
    groups = {g.rsplit("/", 1)[0] for g in groups} - {"hydra", "sweep/arm"}
    assert sorted(groups - set(rows)) == [], "config groups without a row"
    assert sorted(set(rows) - groups) == [], "rows for groups conf/ lacks"
    (experiments,) = [t for t in _tables(README.read_text()) if t[0][0] == "experiment"]
    original = {row[0].strip("`") for row in experiments[1:]}
    for group, cell in rows.items():
        named = set(re.findall(r"`([\w/]+)`", cell)) | (original if group == "experiment" else set())
        options = {p.stem for p in (conf / group).glob("*.yaml")}
        assert sorted(options - named) == [], f"options of {group} the README does not name"
        if group != "hydra/launcher":  # Hydra's own launchers (basic, joblib, submitit) have no file here
            listed = set(re.findall(r"`(\w+)`", re.sub(r"\([^)]*\)", "", cell.split(":")[0])))
            assert sorted(listed - options) == [], f"{group}: options conf/{group} lacks"
