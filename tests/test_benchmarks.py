"""The benchmarks that CI can afford run in their tiny mode and print their tables."""
import subprocess
import sys

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
