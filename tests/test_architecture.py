"""The layout shows the architecture: each package imports only packages below it, and the core imports
nothing else of gandissect. Checked statically on every module's import statements."""

from __future__ import annotations

import ast
from pathlib import Path

import gandissect

PACKAGE = Path(gandissect.__file__).parent
# Lower layers first; a module may import its own layer and any layer before it.
LAYERS = ["core", "engine", "dissection", "causal", "models", "scenes", "viz", "api", "cli"]
LARGEST_MODULE = 400


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "gandissect" or len(parts) < 2:
        return None
    return parts[1]


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.startswith("gandissect.")}


def modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        out.append((".".join(relative.parts), path))
    return out


def test_every_package_is_a_known_layer():
    for name, _ in modules():
        layer = layer_of(name)
        assert layer is None or layer in LAYERS or layer == "__init__", name


def test_imports_point_down_only():
    upward = []
    for name, path in modules():
        mine = layer_of(name)
        if mine not in LAYERS:
            continue
        for target in imports_of(path):
            theirs = layer_of(target)
            if theirs in LAYERS and LAYERS.index(theirs) > LAYERS.index(mine):
                upward.append(f"{name} imports {target}")
    assert not upward, "imports that point up the layers:\n" + "\n".join(upward)


def test_core_imports_nothing_else_of_the_package():
    for name, path in modules():
        if layer_of(name) == "core":
            others = {t for t in imports_of(path) if layer_of(t) not in ("core", None)}
            assert not others, f"{name} imports {others}"


def test_no_module_is_too_long():
    long = {name: n for name, path in modules() if (n := len(path.read_text().splitlines())) > LARGEST_MODULE}
    assert not long, f"modules over {LARGEST_MODULE} lines: {long}"


def test_report_css_and_js_are_files():
    report = PACKAGE / "viz" / "report"
    assert (report / "report.css").exists() and (report / "report.js").exists()
    sources = "".join(path.read_text() for path in report.glob("*.py"))
    assert "report.css" in sources and "report.js" in sources
    assert "font-family" not in sources and "addEventListener" not in sources  # no CSS or JS in Python strings
