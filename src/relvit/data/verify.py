"""Image files checked before training, so a bad file stops the run at the start, not mid-epoch."""
from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor

from PIL import Image

log = logging.getLogger(__name__)

#: data.on_bad_image: stop with the list of bad files, or leave them out of their split.
BAD_IMAGE_POLICIES = ("error", "skip")


def image_problem(path: str) -> str | None:
    """Why ``path`` cannot be decoded as an image, or None when it can.

    Decodes at reduced scale where the format allows (JPEG's draft mode reads every block but skips
    most of the inverse DCT), so a truncated file is caught at a fraction of a full decode's cost.
    """
    try:
        with Image.open(path) as im:
            im.draft("RGB", (max(1, im.width // 8), max(1, im.height // 8)))
            im.load()
    except Exception as err:  # PIL reports bad data with many exception types
        return f"{type(err).__name__}: {err}"
    return None


def find_bad_images(paths: list[str], threads: int | None = None) -> dict[int, str]:
    """{index in ``paths``: problem} for every file that does not decode (threads: PIL releases the GIL)."""
    threads = threads or min(8, (os.cpu_count() or 1) + 1)
    with ThreadPoolExecutor(threads) as pool:
        problems = list(pool.map(image_problem, paths, chunksize=64))
    return {i: p for i, p in enumerate(problems) if p is not None}


def describe_bad(paths: list[str], bad: dict[int, str], limit: int = 10) -> str:
    lines = [f"  {paths[i]}: {problem}" for i, problem in list(bad.items())[:limit]]
    if len(bad) > limit:
        lines.append(f"  ... and {len(bad) - limit} more")
    return "\n".join(lines)
