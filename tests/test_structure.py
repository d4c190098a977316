"""The module rules of ARCHITECTURE.md, checked on the source: no import cycle inside `maskedit` (function-level
imports included), no module imports another's private names, imports point down the layers (the folders of
`maskedit/`), only the page (`interfaces/ui`) imports gradio, nothing in `maskedit` imports app or spaces, nothing
but `__main__` imports the interfaces, and app.py stays short."""

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


def test_library_imports_neither_app_nor_spaces_and_nothing_imports_the_interfaces():
    bad = []
    for path in FILES:
        here = module_name(path)
        for target, _ in imports(path):
            if target.split(".")[0] in ("app", "spaces"):
                bad.append(f"{here} imports {target}")
            if target.startswith("maskedit.interfaces") and not here.startswith("maskedit.interfaces") \
                    and here != "maskedit.__main__":
                bad.append(f"{here} imports {target}")
    assert not bad, bad


# ----- the folders are the layers (issue 20, ARCHITECTURE.md): each may import only the layers below it

LAYERS = ["interfaces", "studio", "workflow", "models", "perception", "method", "memory", "media", "base"]
"""Top to bottom. "base" is the modules at the package top (errors, defaults, limits, runtime), which every layer
may use; `maskedit/__init__.py` (the lazy public API) and `__main__` stand outside the order. `tools/` (the toy
world, procedural scenes) serves tests and benchmarks: it may import the method and below, nothing imports it."""
OUTSIDE = {"maskedit", "maskedit.__main__"}


def layer(module: str) -> str:
    parts = module.split(".")
    if module in OUTSIDE:
        return "outside"
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and (PACKAGE / parts[1]).is_dir()) else "base"


def test_the_package_top_holds_only_the_base_and_folders():
    loose = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert loose == ["__init__.py", "__main__.py", "defaults.py", "errors.py", "limits.py", "runtime.py"], loose
    folders = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and not p.name.startswith("__"))
    assert folders == sorted([*LAYERS[:-1], "tools"]), folders
    for folder in folders:
        init = PACKAGE / folder / "__init__.py"
        assert init.is_file() and ast.get_docstring(ast.parse(init.read_text())), f"{folder}/ needs a docstring"
        assert "May import" in ast.get_docstring(ast.parse(init.read_text())), f"{folder}/ must say what it may import"


def test_imports_point_down_the_layers():
    rank = {name: i for i, name in enumerate(LAYERS)}
    bad = []
    for source, targets in graph().items():
        here = layer(source)
        for target in targets:
            there = layer(target)
            if there == "outside" or here == "outside" or here == there:
                continue
            if there == "tools":
                bad.append(f"{source} imports the tool {target}")
            elif here == "tools":
                if rank[there] < rank["method"]:
                    bad.append(f"the tool {source} imports {target}")
            elif rank[there] < rank[here]:
                bad.append(f"{source} ({here}) imports {target} ({there}), a layer above it")
    assert not bad, "\n".join(bad)


def test_only_the_ui_imports_gradio():
    bad = []
    for path in FILES:
        here = module_name(path)
        for target, _ in imports(path):
            if target.split(".")[0] in ("gradio", "gradio_client") and not here.startswith("maskedit.interfaces.ui"):
                bad.append(f"{here} imports {target}")
    assert not bad, bad


def test_app_reads_in_one_sitting():
    app = PACKAGE.parent / "app.py"
    lines = app.read_text().splitlines()
    assert len(lines) <= 300, f"app.py has {len(lines)} lines; tabs belong in maskedit/interfaces/ui/"


def test_old_module_paths_import_for_one_release_with_a_warning():
    import importlib
    import sys
    import warnings

    import maskedit

    for old, new in maskedit.MOVED_MODULES.items():
        if old == "models":  # now a package that forwards the old module's names itself
            continue
        sys.modules.pop(f"maskedit.{old}", None)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            module = importlib.import_module(f"maskedit.{old}")
        assert any(issubclass(w.category, DeprecationWarning) and "moved to" in str(w.message) for w in caught), old
        targets = [importlib.import_module(f"maskedit.{n}") for n in ((new,) if isinstance(new, str) else new)]
        public = [name for target in targets for name in vars(target) if not name.startswith("_")]
        assert all(getattr(module, name) is not None for name in public[:20]), old
    from maskedit.editing import generate_edit, prepare_clip, train_edit_lora  # the old edit API, whole
    from maskedit.models import load_pipeline
    from maskedit.workflow.generate import generate_edit as new_generate

    assert generate_edit is new_generate and callable(prepare_clip) and callable(train_edit_lora)
    assert load_pipeline.__module__ == "maskedit.models.loading"
