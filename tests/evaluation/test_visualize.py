"""python -m relvit.visualize writes its pictures from a digits checkpoint, and the run's TensorBoard
pictures are the same figures."""
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from relvit.errors import UserError
from relvit.evaluation.figures import DPI, PANEL_INCHES
from relvit.evaluation.visualize import load_image

from conftest import TINY, subprocess_env, write_hollow_png


def tensorboard_images(run_dir) -> dict[str, tuple[int, int]]:
    """{tag: (width, height)} of the images in a run's TensorBoard events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = {p.parent for p in (run_dir / "tensorboard").rglob("events.out.tfevents.*")}
    acc = EventAccumulator(str(events), size_guidance={"images": 0})
    acc.Reload()
    return {tag: (acc.Images(tag)[-1].width, acc.Images(tag)[-1].height) for tag in acc.Tags()["images"]}


def test_visualize_writes_readable_pngs_the_same_as_tensorboards(cli, tmp_path):
    code, _, err = cli("train.py", *TINY, "task=joint", f"paths.output_dir={tmp_path / 'run'}")
    assert code == 0, err[-3000:]
    Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "red.png")
    out = tmp_path / "pictures"
    args = [f"ckpt_path={tmp_path / 'run' / 'checkpoints' / 'best.ckpt'}", f"output_dir={out}", f"image={tmp_path / 'red.png'}"]
    done = subprocess.run([sys.executable, "-m", "relvit.visualize", *args], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env=subprocess_env())
    assert done.returncode == 0, done.stderr[-3000:]
    sizes = {p.name: Image.open(p).size for p in out.iterdir()}
    assert sorted(sizes) == ["cls_attention.png", "position_similarity.png", "positions.png", "relations.png"]
    panel = PANEL_INCHES * DPI
    heads = 3  # TINY's backbone.num_heads
    widths = {"cls_attention.png": 1 + heads + 1, "relations.png": 4, "positions.png": 3}  # panels in a row
    for name, panels in widths.items():
        width, height = sizes[name]
        assert height > panel >= 300 and width > panels * panel, (name, sizes[name])
    assert min(sizes["position_similarity.png"]) >= 320  # joint adds position embeddings
    red = np.asarray(Image.open(out / "relations.png"))
    assert (red == (200, 10, 10)).all(-1).sum() > 0.5 * panel ** 2  # the given image, at panel size
    tensorboard = tensorboard_images(tmp_path / "run")
    for name in widths:
        assert tensorboard[f"pictures/{name[:-4]}"] == sizes[name]  # the same figure in both
    again = subprocess.run([sys.executable, "-m", "relvit.visualize", *args], cwd=tmp_path, capture_output=True, text=True,
                           timeout=300, env=subprocess_env())
    assert again.returncode == 2 and "already holds" in again.stderr  # nothing is overwritten


def test_a_hollow_image_is_refused_before_it_is_drawn(tmp_path):
    with pytest.raises(UserError, match="image=.* cannot be read as an image: its image data ends after"):
        load_image(write_hollow_png(tmp_path / "hollow.png", 600, 600, 2), 16)
