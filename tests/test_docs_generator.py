"""docs/generate.py: measured sections rewritten in place, stamped with the machine and the commit."""
import importlib.util
import json
import re
import subprocess
import sys

import pytest

from conftest import REPO, write_image

spec = importlib.util.spec_from_file_location("docs_generate", REPO / "docs" / "generate.py")
generate = importlib.util.module_from_spec(spec)
sys.modules["docs_generate"] = generate  # dataclasses look their module up
spec.loader.exec_module(generate)


def test_a_block_is_replaced_and_the_text_around_it_kept():
    text = "intro\n<!-- generated: x -->\nold\n<!-- end: x -->\noutro\n"
    assert generate.replace_block(text, "x", "new") == "intro\n<!-- generated: x -->\nnew\n<!-- end: x -->\noutro\n"
    assert generate.replace_block("intro\n", "y", "body") == "intro\n\n<!-- generated: y -->\nbody\n<!-- end: y -->\n"


def test_sections_are_measured_and_stamped(tmp_path):
    (tmp_path / "results.md").write_text("# Results\n\n<!-- generated: quickstart -->\nstale\n<!-- end: quickstart -->\n\nkept\n")
    assert generate.main(["quickstart", "backbones", "--tiny", "--docs-dir", str(tmp_path)]) == 0

    results = (tmp_path / "results.md").read_text()
    assert "stale" not in results and results.startswith("# Results\n") and results.rstrip().endswith("kept")
    sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    assert f"commit {sha}" in results and "torch " in results and " cores, " in results
    rows = re.findall(r"^\| (RelViT|fine-tuning from scratch).*\| (\d\.\d{4}) \| (\d\.\d{4}) \| \d+ s \|$", results, re.M)
    assert [row[0] for row in rows] == ["RelViT", "fine-tuning from scratch"]
    assert generate.main(["relvit_vs_scratch", "--tiny", "--docs-dir", str(tmp_path)]) == 0
    table = (tmp_path / "relvit_vs_scratch.md").read_text()
    assert "Whole sweep: " in table and "| fine-tuning test/acc, labels 1pct | " in table
    backbones = (tmp_path / "backbones.md").read_text()
    assert "<!-- generated: backbones -->" in backbones and "| ViT-Small/4 |" in backbones


def test_the_data_pipeline_section_prints_both_forms_on_one_thread(tmp_path, monkeypatch):
    for label in range(10):  # the benchmark's CIFAR-10 layout, two JPEGs a class, where RELVIT_DATA_DIR points
        for index in range(2):
            write_image(tmp_path / "data" / "cifar10-jpeg" / "train" / str(label) / f"{index:04d}.jpg", 32,
                        colour=(25 * label, 100 + 50 * index, 90))
    monkeypatch.setenv("RELVIT_DATA_DIR", str(tmp_path / "data"))
    assert generate.main(["data_pipeline", "--tiny", "--docs-dir", str(tmp_path)]) == 0
    text = (tmp_path / "data_pipeline.md").read_text()
    assert "python benchmarks/data_pipeline.py --threads 1" in text and "1 threads for the batched pipeline" in text
    ratios = dict(re.findall(r"^(ratio_\w+): (\d+\.\d)$", text, re.M))
    assert set(ratios) == {f"ratio_{size}_per_core{form}" for size in ("224px", "32px")
                           for form in ("", "_sync_free_compiled")}
    assert all(float(value) > 0 for value in ratios.values())


def test_an_unknown_section_is_named_with_the_valid_ones(capsys):
    assert generate.main(["quikstart"]) == 2
    assert "unknown section 'quikstart'; valid: quickstart, relvit_vs_scratch, backbones" in capsys.readouterr().err


def acceptance_results(folder, device: str, dry_run: bool):
    """A results.json in the form benchmarks/gpu_acceptance.py writes, with one row per step."""
    steps = {"gpu_tests": {"rows": [{"test": "tests/test_hardware.py::test_sync", "outcome": "passed", "count": 1, "reason": ""}]},
             "train_step": {"rows": [{"backbone": "vit_small", "size": "32/4", "task": "upstream", "img_s": 9120.5}]},
             "comparison": {"rows": [{"measure": "fine-tuning test/acc, labels 100pct", "relvit": "0.71", "scratch": "0.65",
                                      "difference": "0.06"}], "notes": ["wall time 150 s"]}}
    for step in steps.values():
        step.update(status="ok", seconds=12.0, device=device)
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps({"started": "2026-12-04 20:00 UTC", "dry_run": dry_run, "steps": steps}))
    return folder


def test_the_gpu_sections_name_the_card_and_say_when_there_was_none(tmp_path, monkeypatch):
    monkeypatch.setenv("RELVIT_GPU_RESULTS", str(acceptance_results(tmp_path / "h200", "NVIDIA H200", False)))
    assert generate.main(["gpu_performance", "gpu_comparison", "--docs-dir", str(tmp_path)]) == 0
    performance, results = (tmp_path / "performance.md").read_text(), (tmp_path / "results.md").read_text()
    assert "on NVIDIA H200." in performance and "| vit_small | 32/4 | upstream | 9120.5 |" in performance
    assert "| tests/test_hardware.py::test_sync | passed | 1 |  |" in performance and "fine-tuning test/acc" not in performance
    assert "| fine-tuning test/acc, labels 100pct | 0.71 | 0.65 | 0.06 |" in results and "- wall time 150 s" in results
    assert "No GPU figures yet" not in performance + results
    monkeypatch.setenv("RELVIT_GPU_RESULTS", str(acceptance_results(tmp_path / "cpu", "CPU (2 cores)", True)))
    assert generate.main(["gpu_performance", "--docs-dir", str(tmp_path)]) == 0
    assert "**No GPU figures yet**" in (tmp_path / "performance.md").read_text()


@pytest.mark.parametrize("doc", ["backbones.md", "results.md", "data_pipeline.md", "relvit_vs_scratch.md",
                                 "performance.md", "relvit_vs_scratch_cifar10.md"])
def test_the_shipped_docs_hold_their_generated_blocks(doc):
    names = [name for name, section in generate.SECTIONS.items() if section.doc == doc]
    text = (REPO / "docs" / doc).read_text()
    for name in names:
        assert re.search(rf"<!-- generated: {name} -->\n_Written by `python docs/generate.py {name}[^`]*`.*commit [0-9a-f]{{7}}",
                         text), f"docs/{doc} lacks a generated {name} block"



@pytest.mark.slow  # ten tiny runs and four frozen evaluations: about a minute on 2 CPU cores
def test_the_cifar10_section_runs_the_comparison_and_reports_grid_and_pretext_curve(tmp_path, monkeypatch):
    for label in range(10):  # CIFAR-10's JPEG layout (training images only), where RELVIT_DATA_DIR points
        for index in range(20):
            write_image(tmp_path / "data" / "cifar10" / "train" / f"c{label}" / f"{index:04d}.jpg", 32,
                        colour=(25 * label, 10 * index, 90))
    monkeypatch.setenv("RELVIT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(generate, "SWEEPS", tmp_path / "multirun")
    assert generate.main(["relvit_vs_scratch_cifar10", "--tiny", "--docs-dir", str(tmp_path)]) == 0
    text = (tmp_path / "relvit_vs_scratch_cifar10.md").read_text()
    assert "<!-- generated: relvit_vs_scratch_cifar10 -->" in text and "Whole sweep: " in text
    assert "| fine-tuning test/acc, labels 1pct | " in text and "| relvit − scratch | relvit − joint |" in text
    assert re.search(r"^\| 1pct \| joint \| 0\.001 \| \d\.\d{4} ± \d\.\d{4} \| \d\.\d{4} ± ", text, re.M)
    assert re.search(r"^\| 2 \| \d\.\d{4} ± \d\.\d{4} \| \d\.\d{4} ± \d\.\d{4} \|$", text, re.M)  # the curve
    assert list((tmp_path / "multirun").glob("cifar10-*/0/comparison.json"))  # the sweep is kept


def fake_sweep(root, name, relvit_acc, rel_acc):
    """A finished comparison sweep of two seeds, as its jobs' comparison.json files."""
    sweep = root / name
    for seed in (1, 2):
        job = {"seed": seed, "wall_s": 1.0, "complete": True, "pretrained_arm": "relvit", "random_arm": "scratch",
               "pretrain": {"val/rel_acc": rel_acc + seed / 100},
               "frozen": {"pretrained": {"test/knn_acc_mean": 0.4}, "random": {"test/knn_acc_mean": 0.3}},
               "finetune": {"100pct": {"relvit": {"test/acc": relvit_acc + seed / 100, "val/acc": 0.5, "lr": 1e-3},
                                       "scratch": {"test/acc": 0.25, "val/acc": 0.4, "lr": 1e-3}}}}
        (sweep / str(seed - 1)).mkdir(parents=True)
        (sweep / str(seed - 1) / "comparison.json").write_text(json.dumps(job))
    return sweep


def test_a_control_is_set_against_its_own_base_sweep(tmp_path):
    base, longer = fake_sweep(tmp_path, "base", 0.30, 0.40), fake_sweep(tmp_path, "longer", 0.35, 0.45)
    assert generate.control_pair(f"{longer}:{base}") == (longer.resolve(), base.resolve())
    assert generate.control_pair(str(longer)) == (longer.resolve(), None)
    report = generate.control_report(base, longer)
    assert "Sweep `longer` (seeds 1, 2), against `base`" in report
    assert "| fine-tuning test/acc, labels 100pct | +0.0500 ± 0.0000 |" in report
    assert "| pre-training val/rel_acc | +0.0500 ± 0.0000 |" in report
    assert "frozen pre-trained" not in report  # unchanged figures are left out
    assert "The control sweep's own table:" in report and "| fine-tuning test/acc, labels 100pct | 0.3650 ± 0.0071 |" in report
