"""The architecture holds: import-linter's contracts (pyproject.toml, [tool.importlinter]),
the list of core modules in them complete, and no import cycle anywhere."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("protocol", "p2pnode", "cli")
LENDING = tuple(f"{p}.lending" for p in PACKAGES)


def all_modules() -> set[str]:
    out = set()
    for pkg in PACKAGES:
        out.add(pkg)
        out |= {m.name for m in pkgutil.walk_packages([str(ROOT / pkg)], pkg + ".")}
    return out


def test_import_linter_contracts_are_kept():
    code = "import sys\nfrom importlinter.cli import lint_imports\nsys.exit(lint_imports())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_independence_contract_names_every_module_of_the_core():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    [contract] = [c for c in config["contracts"] if c["name"].startswith("the core is independent of lending")]
    core = {m for m in all_modules() if not any(m == x or m.startswith(x + ".") for x in LENDING)}
    assert set(contract["source_modules"]) == core, "add new core modules to pyproject.toml's contract"


def test_the_core_never_mentions_loans_or_offers():
    """Issue 8's test: a grep for loan|offer over the core's files finds nothing; only
    lending's own packages (and pyproject's list of built-in extensions) name them."""
    files = [f for pkg in PACKAGES for f in sorted((ROOT / pkg).rglob("*.py"))
             if not any(part == "lending" for part in f.relative_to(ROOT).parts)]
    assert len(files) > 30  # the walk found the core, not nothing
    hits = [f"{f.relative_to(ROOT)}:{n}: {line.strip()}" for f in files
            for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1)
            if "loan" in line or "offer" in line]
    assert hits == [], "\n".join(hits)


def test_no_module_imports_another_that_imports_it_back():
    graph = grimp.build_graph(*PACKAGES)
    ours = {m for m in graph.modules if m.split(".")[0] in PACKAGES}
    edges = {m: {n for n in graph.find_modules_directly_imported_by(m) if n in ours} for m in ours}
    cycles = [c for c in _strongly_connected(edges) if len(c) > 1]
    assert cycles == [], f"import cycles: {cycles}"


def _strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative (bounded by the number of modules and imports)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, it = work[-1]
            nxt = next(it, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(edges[nxt]))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    component.append(m)
                    if m == node:
                        break
                out.append(sorted(component))
    return out


def test_the_cycle_finder_finds_cycles():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert sorted(map(sorted, _strongly_connected(edges))) == [["a", "b", "c"], ["d"], ["e"]]


def test_no_two_test_files_share_a_name():
    """pytest imports test files by their basename here (no packages under tests/), so a
    second file of the same name fails the whole collection with "import file mismatch"."""
    from collections import Counter
    from pathlib import Path

    names = Counter(p.name for p in Path(__file__).parent.rglob("test_*.py"))
    assert [n for n, k in names.items() if k > 1] == []
