"""The module rules of ARCHITECTURE.md, checked on the source: no import cycle inside `maskedit` (function-level
imports included), no module imports another's private names, nothing in `maskedit` imports gradio or app,
and nothing but `__main__` imports the command line."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "maskedit"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> list[tuple[str, list[str]]]:
    """(imported module, names) of every import in a file, relative ones resolved."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [alias.name for alias in node.names]
            if node.module is None or base in MODULES_AND_PACKAGES:
                # `from . import editing` imports the submodules themselves
                sub = [f"{base}.{n}" for n in names if f"{base}.{n}" in MODULES_AND_PACKAGES]
                found += [(s, []) for s in sub]
            found.append((base, names))
        elif isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
    return found


FILES = sorted(PACKAGE.rglob("*.py"))
MODULES_AND_PACKAGES = {module_name(p) for p in FILES}


def graph() -> dict[str, set[str]]:
    edges = {}
    for path in FILES:
        here = module_name(path)
        edges[here] = {target for target, _ in imports(path) if target in MODULES_AND_PACKAGES and target != here}
    return edges


def test_no_import_cycle():
    edges = graph()
    state, cycles = {}, []

    def visit(node, trail):
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(trail[trail.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles: " + "; ".join(" → ".join(c) for c in cycles)


def test_no_private_names_across_modules():
    bad = []
    for path in FILES:
        for target, names in imports(path):
            if target in MODULES_AND_PACKAGES and target != module_name(path):
                bad += [f"{module_name(path)} imports {target}.{n}" for n in names if n.startswith("_")]
    assert not bad, bad


def test_library_imports_neither_gradio_nor_app_nor_cli():
    bad = []
    for path in FILES:
        here = module_name(path)
        for target, _ in imports(path):
            top = target.split(".")[0]
            if top in ("gradio", "gradio_client", "app", "spaces"):
                bad.append(f"{here} imports {target}")
            if target == "maskedit.cli" and here not in ("maskedit.__main__",):
                bad.append(f"{here} imports {target}")
    assert not bad, bad
