"""The README's layout tree names every module of the package once, and nothing that is not there."""
from __future__ import annotations

import re

from conftest import REPO

NAME_COLUMN = 27  # where the descriptions of the tree start


def layout_tree() -> list[str]:
    """The paths the README's layout block names, in order (folders end with ``/``)."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Layout"):]
    section = section[: section.index("\n## ", 1)]
    (block,) = re.findall(r"```\n(.*?)```", section, re.S)
    paths: list[str] = []
    parents: list[str] = []  # the folder at each depth of indentation
    for line in block.splitlines():
        indent = len(line) - len(line.lstrip())
        if not line.strip() or indent >= NAME_COLUMN - 1:
            continue  # a description carried on to the next line
        depth = indent // 2
        names = re.split(r",\s*", re.split(r"\s{2,}", line.strip())[0])
        parents = parents[:depth]
        for name in names:
            paths.append("".join(parents) + name)
        if names[-1].endswith("/"):
            parents.append(names[-1])
    return paths


def test_readme_layout_names_each_module_once_and_only_modules_that_exist():
    paths = layout_tree()
    assert len(paths) == len(set(paths)), f"named twice: {sorted({p for p in paths if paths.count(p) > 1})}"
    package = REPO / "src" / "relvit"
    modules = {str(p.relative_to(REPO)) for p in package.rglob("*.py")
               if p.name != "__init__.py" or p.parent == package}
    folders = {f"{p.relative_to(REPO)}/" for p in package.rglob("*") if p.is_dir() and p.name != "__pycache__"}
    named = {p for p in paths if p.startswith("src/relvit/")}
    assert modules - named == set(), "modules the layout does not name"
    assert folders - named == set(), "folders the layout does not name"
    assert named - modules - folders - {"src/relvit/"} == set(), "the layout names files the package lacks"
    for path in paths:
        assert (REPO / path).exists(), path
