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


PACKAGE = REPO / "src" / "relvit"
#: The modules beside the packages that import none of them: the exceptions every package raises.
SHARED = {"errors"}


def room_of(module: str) -> str:
    """The package (or top-level module) of ``relvit.<room>...``."""
    return module.split(".")[1] if "." in module else "relvit"


def relvit_imports(path) -> set[str]:
    """The relvit modules ``path`` imports, at its top and inside functions alike."""
    import ast

    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.split(".")[0] == "relvit":
            found.update([node.module] if node.module != "relvit" else [f"relvit.{a.name}" for a in node.names])
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "relvit")
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: a relative import; name the module (relvit.<package>.<module>)")
    return found


def may_import() -> dict[str, set[str]]:
    """Each package's "May import:" line, from its __init__.py's docstring."""
    import ast

    rule = {}
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        found = re.search(r"^May import: (.*?)(?:\n\n|\Z)", doc, re.S | re.M)
        assert found, f"{init.relative_to(REPO)}: its docstring says what it holds and ends with 'May import: ...'"
        names = {n.strip() for n in found.group(1).replace("\n", " ").split(",")} - {"nothing"}
        assert all(n.startswith("relvit.") for n in names), (init, names)
        rule[init.parent.name] = {room_of(n) for n in names}
    return rule


def test_each_package_imports_only_what_its_docstring_allows():
    rule = may_import()
    assert set(rule) >= {"backbones", "config", "data", "evaluation", "model", "probes", "runs", "training"}
    broken = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).parts
        room = parts[0] if len(parts) > 1 else path.stem
        if room in rule:
            allowed = rule[room] | {room}
        elif room in SHARED:
            allowed = {room}
        else:  # an entry point (cli.py, python -m relvit.<x>, the package's __init__): any package below
            allowed = set(rule) | SHARED | {"cli"}
        broken += [f"{path.relative_to(REPO)} imports {m}" for m in sorted(relvit_imports(path)) if room_of(m) not in allowed]
    assert not broken, "imports the package docstrings do not allow:\n" + "\n".join(broken)


def test_the_packages_import_downward_only():
    """The "May import" lines are an order: no package may import one that may import it, directly
    or through others."""
    rule = may_import()
    order: list[str] = []
    todo = dict(rule)
    while todo:
        ready = sorted(p for p, needs in todo.items() if not (needs - SHARED) - set(order))
        assert ready, f"packages that may import each other: {sorted(todo)}"
        order += ready
        for p in ready:
            del todo[p]
    assert order.index("runs") < order.index("model") < order.index("config") < order.index("training") < order.index("evaluation")
