"""The package layout holds: data flows one way, no import circle, benchmarks only under integration.bench.

Read from the source with `ast`, so every import counts, those inside functions (lazy imports) too:
a lazy import is still a dependency, and a circle made of lazy imports is still a circle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("acquisition", "ai", "dicom_store", "hl7", "api", "integration")

#: Which packages each package may import (docs/architecture.md): the data flows one way,
#: acquisition → dicom_store → ai → hl7/api, and only integration knows them all.
MAY_IMPORT = {
    "acquisition": set(),
    "dicom_store": set(),
    "ai": {"acquisition", "dicom_store"},
    "hl7": {"acquisition", "ai"},
    "api": {"acquisition", "ai", "dicom_store", "hl7"},
    "integration": set(PACKAGES) - {"integration"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def source_modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def imports_of(path: Path, name: str, known: set[str]) -> Iterator[tuple[str, int]]:
    """(imported module, line) for every import in the file; `from X import Y` names X.Y when it is a module."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                yield (candidate if candidate in known else base), node.lineno


def graph() -> dict[str, set[str]]:
    modules = source_modules()
    known = set(modules)
    edges: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for target, _ in imports_of(path, name, known):
            while target and target not in known and "." in target:
                target = target.rsplit(".", 1)[0]  # `import a.b.attr` style: the module that exists
            if target in known and target != name:
                edges[name].add(target)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def cross_package_imports() -> Iterator[tuple[str, str, int]]:
    modules = source_modules()
    known = set(modules)
    for name, path in modules.items():
        for target, line in imports_of(path, name, known):
            if target.split(".")[0] in PACKAGES and target.split(".")[0] != name.split(".")[0]:
                yield name, target, line


def test_no_import_circle_anywhere() -> None:
    assert cycles(graph()) == []


def test_the_cycle_finder_finds_a_circle() -> None:
    """The walker must be able to fail: a circle of three and a self-contained pair are found."""
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"e"}, "e": set()}
    assert cycles(edges) == [["a", "b", "c"]]


def test_data_flows_one_way_between_packages() -> None:
    wrong = [
        f"{module} imports {target} (line {line})"
        for module, target, line in cross_package_imports()
        if target.split(".")[0] not in MAY_IMPORT[module.split(".")[0]]
    ]
    assert wrong == []


@pytest.mark.parametrize("package", ["acquisition", "ai", "dicom_store", "hl7", "api"])
def test_no_benchmark_or_load_generator_inside_a_product_package(package: str) -> None:
    named = [
        str(p.relative_to(ROOT))
        for p in (ROOT / package).rglob("*.py")
        if "bench" in p.stem or "loadtest" in p.stem or "bench" in p.parent.name
    ]
    assert named == []


def test_only_the_bench_command_imports_the_benchmarks() -> None:
    importers = {
        module
        for module, targets in graph().items()
        for target in targets
        if target.startswith("integration.bench") and not module.startswith("integration.bench")
    }
    assert importers == {"integration.commands.bench"}


def test_the_repository_points_at_nothing_outside_it() -> None:
    """A person with only the clone has no workspace folder: docs and docstrings point into the repo."""
    files = [p for p in ROOT.rglob("*") if p.suffix in {".py", ".md", ".toml", ".sh"} or p.name == "Makefile"]
    outside = [
        f"{p.relative_to(ROOT)}:{n}"
        for p in files
        if not {".venv", ".git", "node_modules"} & set(p.relative_to(ROOT).parts) and p.name != "test_layout.py"
        for n, line in enumerate(p.read_text(encoding="utf-8", errors="replace").splitlines(), start=1)
        if "../shared" in line or "DESIGN.md" in line or "DESIGN §" in line
    ]
    assert outside == []
