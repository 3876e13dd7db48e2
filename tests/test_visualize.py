"""python -m relvit.visualize writes its pictures, at the sizes its tiles make, from a digits checkpoint."""
import subprocess
import sys

import pytest
from PIL import Image

from relvit.errors import UserError
from relvit.visualize import TILE, load_image

from conftest import TINY, subprocess_env, write_hollow_png


def row_size(tiles: int) -> tuple[int, int]:
    return tiles * (TILE + 2) + 2, TILE + 4


def test_visualize_writes_pngs_of_the_expected_sizes(cli, tmp_path):
    code, _, err = cli("train.py", *TINY, "task=joint", f"paths.output_dir={tmp_path / 'run'}")
    assert code == 0, err[-3000:]
    Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "red.png")
    out = tmp_path / "pictures"
    args = [f"ckpt_path={tmp_path / 'run' / 'checkpoints' / 'best.ckpt'}", f"output_dir={out}", f"image={tmp_path / 'red.png'}"]
    done = subprocess.run([sys.executable, "-m", "relvit.visualize", *args], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env=subprocess_env())
    assert done.returncode == 0, done.stderr[-3000:]
    sizes = {p.name: Image.open(p).size for p in out.iterdir()}
    heads = 3  # TINY's backbone.num_heads
    assert sizes["cls_attention.png"] == row_size(1 + heads + 1)  # the image, each head, their mean
    assert sizes["relations.png"] == row_size(4)  # the image, the query, predicted, true
    assert sizes["positions.png"] == row_size(3)  # the image, predicted, true
    assert min(sizes["position_similarity.png"]) >= 320  # joint adds position embeddings
    again = subprocess.run([sys.executable, "-m", "relvit.visualize", *args], cwd=tmp_path, capture_output=True, text=True,
                           timeout=300, env=subprocess_env())
    assert again.returncode == 2 and "already holds" in again.stderr  # nothing is overwritten


def test_a_hollow_image_is_refused_before_it_is_drawn(tmp_path):
    with pytest.raises(UserError, match="image=.* cannot be read as an image: its image data ends after"):
        load_image(write_hollow_png(tmp_path / "hollow.png", 600, 600, 2), 16)
