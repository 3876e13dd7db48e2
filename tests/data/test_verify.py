"""Image files are verified by decoding them: a truncated or hollow file is caught before training."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from relvit.data.verify import MAX_PIXELS, find_bad_images, image_problem

from conftest import write_hollow_png as png


def test_a_png_with_fewer_rows_than_its_header_is_caught(tmp_path):
    problem = image_problem(png(tmp_path / "hollow.png", 3000, 3000, 10))
    assert problem is not None and "ends after 30010 of the 9003000 bytes" in problem
    assert image_problem(png(tmp_path / "whole.png", 300, 300, 300)) is None


def test_a_huge_png_with_ten_rows_is_refused_unread(tmp_path):
    problem = image_problem(png(tmp_path / "bomb.png", 13000, 13000, 10))
    assert problem == f"13000x13000 pixels, more than the {MAX_PIXELS} an image file may have"


@pytest.mark.parametrize("fmt, options", [("PNG", {}), ("PNG", {"interlace": 1}), ("JPEG", {"quality": 90})])
def test_truncated_files_are_caught_and_whole_ones_pass(tmp_path, fmt, options):
    pixels = np.random.default_rng(0).integers(0, 255, (96, 80, 3), dtype=np.uint8)
    whole = tmp_path / f"whole.{fmt.lower()}"
    Image.fromarray(pixels).save(whole, fmt, **options)
    cut = tmp_path / f"cut.{fmt.lower()}"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    assert find_bad_images([str(whole), str(cut)]).keys() == {1}


@pytest.mark.parametrize("mode", ["1", "L", "P", "RGB", "RGBA", "I;16"])
def test_every_png_mode_counts_its_rows_right(tmp_path, mode):
    rng = np.random.default_rng(1)
    if mode == "I;16":  # 16-bit grey: two bytes a sample
        image = Image.fromarray(rng.integers(0, 65535, (37, 53), dtype=np.uint16))
    else:
        image = Image.fromarray(rng.integers(0, 255, (37, 53, 3), dtype=np.uint8)).convert(mode)
    path = tmp_path / "image.png"
    image.save(path)
    assert Image.open(path).mode == mode and image_problem(str(path)) is None
