"""The entry points refuse Hydra's options that unpickle a file, before Hydra reads it."""
from __future__ import annotations

import pickle

import pytest


class Payload:
    """What a crafted pickle runs on load: it creates ``marker``."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("script", ["train.py", "evaluate.py", "src/relvit/export.py"])
@pytest.mark.parametrize("form", ["--experimental-rerun {}", "--experimental-rerun={}", "--exp={}"])
def test_a_rerun_pickle_is_refused_with_one_line_and_never_loaded(cli, tmp_path, script, form):
    marker = tmp_path / "ran.txt"
    crafted = tmp_path / "config.pickle"
    crafted.write_bytes(pickle.dumps(Payload(str(marker))))
    code, out, err = cli(script, *form.format(crafted).split())
    assert code == 2
    assert not marker.exists()
    assert err.count("\n") == 1 and "--experimental-rerun unpickles a file" in err and "Traceback" not in err
