"""The README's layout section names every module of the package."""
from __future__ import annotations

import re

from conftest import REPO


def test_readme_layout_lists_every_module():
    readme = (REPO / "README.md").read_text()
    layout = readme[readme.index("## Layout"):]
    layout = layout[: layout.index("\n## ", 1)]
    named = set(re.findall(r"[\w]+\.py", layout))
    package = REPO / "src" / "relvit"
    modules = {p.name for p in package.rglob("*.py") if p.name != "__init__.py"}
    assert modules <= named, f"not in the README's layout: {sorted(modules - named)}"
    for folder in {p.parent for p in package.rglob("*.py")} - {package}:
        assert f"{folder.name}/" in layout, folder
