"""The arrows of ARCHITECTURE.md, read from the imports of every module (ast): an import
that must never exist fails here."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
IO = {"asyncio", "os", "queue", "redis", "select", "selectors", "socket", "subprocess",
      "tenacity", "threading", "time", "concurrent", "logging", "pathlib", "io", "shutil"}


def imports(path: Path, root: Path = ROOT) -> set[str]:
    """Every module `path` imports, as absolute dotted names (relative ones resolved)."""
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def modules(package: str, root: Path = ROOT) -> list[Path]:
    return sorted((root / package.replace(".", "/")).rglob("*.py"))


def offenders(package: str, forbidden: set[str], root: Path = ROOT) -> list[str]:
    """`module imports name` for each import of `package` inside a forbidden tree, and
    each use of the random module's global generator in the core."""
    out = []
    for path in modules(package, root):
        where = path.relative_to(root)
        for name in sorted(imports(path, root)):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                out.append(f"{where} imports {name}")
        if package.endswith(".core"):
            for node in ast.walk(ast.parse(path.read_text())):
                if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                        and node.value.id == "random" and node.attr != "Random"):
                    out.append(f"{where} uses random.{node.attr}")
    return out


RULES = [
    ("conflux_raft", {"conflux_redux", "pydux"}),
    ("conflux_raft.core", IO | {"conflux_raft.storage",
                                "conflux_raft.transport", "conflux_raft.node",
                                "conflux_raft.testing", "conflux_raft.admin"}),
    ("conflux_raft.storage", {"conflux_raft.node", "conflux_raft.transport",
                              "conflux_raft.testing", "conflux_raft.admin"}),
    ("conflux_raft.transport", {"conflux_raft.node", "conflux_raft.storage",
                                "conflux_raft.testing", "conflux_raft.admin"}),
    ("conflux_raft.node", {"conflux_raft.testing", "conflux_raft.admin"}),
    # reads only what nodes publish to Redis: never a node's internals
    ("conflux_raft.admin", {"conflux_raft.node", "conflux_raft.core", "conflux_raft.storage",
                            "conflux_raft.testing"}),
]


@pytest.mark.parametrize(("package", "forbidden"), RULES, ids=[r[0] for r in RULES])
def test_no_forbidden_arrow(package: str, forbidden: set[str]) -> None:
    assert offenders(package, forbidden) == []


def test_conflux_redux_uses_only_what_conflux_raft_exports() -> None:
    import conflux_raft

    bad = []
    for path in modules("conflux_redux"):
        for name in sorted(imports(path)):
            if name.startswith("conflux_raft."):
                attr = name.removeprefix("conflux_raft.")
                if "." in attr or attr not in conflux_raft.__all__:
                    bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert bad == []


def test_every_module_is_private_behind_its_package() -> None:
    public = {"__init__.py", "simulate.py"}  # simulate is a command: python -m ...
    named = [p for pkg in ("conflux_raft", "conflux_redux") for p in modules(pkg)
             if p.name not in public and not p.name.startswith("_")]
    assert named == []


def test_the_checks_catch_a_forbidden_arrow(tmp_path: Path) -> None:
    core = tmp_path / "conflux_raft" / "core"
    core.mkdir(parents=True)
    (core / "_probe.py").write_text(
        "import random\nimport threading\nfrom ..node import RaftNode\n"
        "def f(rng: random.Random) -> float:\n    return random.random()\n")
    assert offenders("conflux_raft.core", RULES[1][1], tmp_path) == [
        "conflux_raft/core/_probe.py imports conflux_raft.node",
        "conflux_raft/core/_probe.py imports conflux_raft.node.RaftNode",
        "conflux_raft/core/_probe.py imports threading",
        "conflux_raft/core/_probe.py uses random.random",
    ]
