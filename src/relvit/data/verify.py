"""Image files checked before training, so a bad file stops the run at the start, not mid-epoch."""
from __future__ import annotations

import logging
import os
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor

from PIL import Image

log = logging.getLogger(__name__)

#: data.on_bad_image: stop with the list of bad files, or leave them out of their split.
BAD_IMAGE_POLICIES = ("error", "skip")
#: The most pixels a file may have (PIL's decompression-bomb warning limit): each one is decoded.
MAX_PIXELS = 89_478_485
#: Bytes of one pixel of a PNG, per colour type, in samples (grey, RGB, palette, grey + alpha, RGBA).
_PNG_SAMPLES = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
#: Adam7's passes: (first column, first row, column step, row step).
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def image_problem(path: str) -> str | None:
    """Why ``path`` cannot be decoded as an image, or None when it can.

    Decodes at reduced scale where the format allows (JPEG's draft mode reads every block but skips
    most of the inverse DCT), so a truncated file is caught at a fraction of a full decode's cost.
    Files of more than ``MAX_PIXELS`` are refused unread.
    """
    try:
        with Image.open(path) as im:
            if im.width * im.height > MAX_PIXELS:
                return f"{im.width}x{im.height} pixels, more than the {MAX_PIXELS} an image file may have"
            im.draft("RGB", (max(1, im.width // 8), max(1, im.height // 8)))
            im.load()
            return png_rows_problem(path) if im.format == "PNG" else None
    except Exception as err:  # PIL reports bad data with many exception types
        return f"{type(err).__name__}: {err}"


def png_rows_problem(path: str) -> str | None:
    """Why a PNG's compressed data holds fewer rows than its header says, or None.

    PIL fills the missing rows with zeros and reports nothing, so the rows' bytes are counted here.
    """
    with open(path, "rb") as f:
        f.read(8)  # the signature, checked by PIL
        inflate, got, need = zlib.decompressobj(), 0, None
        while need is None or got < need:
            head = f.read(8)
            if len(head) < 8:
                break
            length, kind = struct.unpack(">I4s", head)
            data = f.read(length)
            f.read(4)  # the CRC, checked by PIL
            if kind == b"IHDR":
                width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", data[:13])
                bits = depth * _PNG_SAMPLES.get(colour, 4)
                passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
                need = sum(rows * (1 + (cols * bits + 7) // 8) for x, y, dx, dy in passes
                           if (cols := (width - x + dx - 1) // dx) and (rows := (height - y + dy - 1) // dy))
            elif kind == b"IDAT":
                while data and (need is None or got < need):
                    got += len(inflate.decompress(data, 1 << 20))  # bounded: a bomb unpacks chunk by chunk
                    data = inflate.unconsumed_tail
            elif kind == b"IEND":
                break
    if need is not None and got < need:
        return f"its image data ends after {got} of the {need} bytes its {width}x{height} header needs (truncated)"
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
