"""The benchmarks that CI can afford run in their tiny mode and print their tables."""
import json
import subprocess
import sys

import pytest

from conftest import REPO, subprocess_env


def test_train_step_tiny_prints_its_table():
    out = subprocess.run([sys.executable, "benchmarks/train_step.py", "--tiny"], cwd=REPO, env=subprocess_env(),
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith("| vit_tiny")]
    assert [row.split("|")[4].strip() for row in rows] == ["upstream", "joint"]
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        img_s, gflop, plain_img_s = float(cells[4]), float(cells[6]), float(cells[9])
        assert img_s > 0 and gflop > 0 and plain_img_s > 0
        assert cells[8].endswith("%") and cells[11].endswith("x")


def run_acceptance(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "benchmarks/gpu_acceptance.py", "--dry-run", *args], cwd=REPO,
                          env=subprocess_env(), capture_output=True, text=True, timeout=3600)


@pytest.mark.slow  # about a minute; the failing-step test below runs two of its steps in the default suite
def test_gpu_acceptance_dry_run_runs_every_step_and_writes_its_tables(tmp_path):
    out = run_acceptance("--out", str(tmp_path / "results"))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    results = json.loads((tmp_path / "results" / "results.json").read_text())
    assert list(results["steps"]) == ["gpu_tests", "train_step", "optimizer", "epoch_throughput", "comparison"]
    assert all(step["status"] == "ok" for step in results["steps"].values())
    steps = results["steps"]
    assert {row["outcome"] for row in steps["gpu_tests"]["rows"]} == {"skipped"}  # no CUDA here
    assert sum(row["count"] for row in steps["gpu_tests"]["rows"]) >= 12
    assert [(r["task"], r["compiled"]) for r in steps["train_step"]["rows"]] == [("upstream", False), ("upstream", True), ("joint", False)]
    assert all(r["img_s"] > 0 and r["tflops"] >= 0 for r in steps["train_step"]["rows"])
    assert [r["kernel"] for r in steps["optimizer"]["rows"]] == ["fused", "foreach"]
    assert [r["path"] for r in steps["epoch_throughput"]["rows"]] == ["32px in-memory", "224px JPEG decode=gpu", "224px JPEG decode=cpu"]
    assert all(r["train_img_s"] > 0 for r in steps["epoch_throughput"]["rows"])
    assert any(r["measure"].startswith("fine-tuning ") and "acc, labels 100pct" in r["measure"] for r in steps["comparison"]["rows"])
    table = (tmp_path / "results" / "results.md").read_text()
    assert "| gpu_tests | ok |" in table and "### comparison" in table and "| fused |" in table


def test_a_failing_step_leaves_the_others_results_and_old_results_are_kept(tmp_path):
    broken = tmp_path / "cifar" / "train" / "0"
    broken.mkdir(parents=True)
    (broken / "0.jpg").write_bytes(b"not a jpeg")
    out = run_acceptance("--only", "optimizer", "comparison", "--cifar", str(tmp_path / "cifar"), "--out", str(tmp_path / "r"))
    assert out.returncode == 1
    steps = json.loads((tmp_path / "r" / "results.json").read_text())["steps"]
    assert steps["optimizer"]["status"] == "ok" and len(steps["optimizer"]["rows"]) == 2
    assert steps["comparison"]["status"] == "failed" and "train.py exited" in steps["comparison"]["error"]
    again = run_acceptance("--only", "optimizer", "--out", str(tmp_path / "r"))
    assert again.returncode == 2 and "is not empty; results are never written over" in again.stderr
    assert json.loads((tmp_path / "r" / "results.json").read_text())["steps"] == steps


def run_resume_exactness(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "benchmarks/resume_exactness.py", *args], cwd=REPO, env=subprocess_env(),
                          capture_output=True, text=True, timeout=1800)


def test_resume_exactness_refuses_an_unknown_kernel_setting():
    out = run_resume_exactness("--settings", "default,sse9")
    assert out.returncode == 2 and "'sse9' is not one of default, avx2, avx512" in out.stderr


@pytest.mark.slow
def test_resume_exactness_tiny_finds_resume_exact_under_other_kernels():
    # the kernels another processor would pick: AVX-512 ATen kernels and oneDNN capped at AVX2
    out = run_resume_exactness("--tiny", "--settings", "avx512,onednn-avx2")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith(("| avx512 ", "| onednn-avx2 "))]
    assert len(rows) == 2 and all(row.rstrip().endswith("| yes |") for row in rows), out.stdout
