"""Progress of long data work (downloads, extraction, one-time decodes): a bar on a terminal, a few
log lines when the output goes to a file."""
from __future__ import annotations

import logging
import sys
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")
log = logging.getLogger("relvit")


class Progress:
    """``with Progress(total, "decoding", "img") as p: ... p.update(n)``."""

    def __init__(self, total: int | None, desc: str, unit: str = "it", unit_scale: bool = False):
        self.total, self.desc, self.unit = total, desc, unit
        self.done = 0
        self._bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, unit_scale=unit_scale, leave=False)
        self._next_report = 0.25

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.total and self.done >= self._next_report * self.total:
            log.info("%s: %d%% (%d of %d %s)", self.desc, int(100 * self.done / self.total), self.done, self.total, self.unit)
            self._next_report += 0.25

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.close()


def progress(items: Iterable[T], total: int, desc: str, unit: str = "it") -> Iterator[T]:
    with Progress(total, desc, unit) as p:
        for item in items:
            yield item
            p.update()
