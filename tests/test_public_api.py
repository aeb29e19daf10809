"""The package's public surface: what the README and docs show is importable from ``rxquant`` and
listed in ``__all__``; names with a leading underscore stay inside their module. (The layering
and the absence of import cycles are checked by import-linter in `make lint`; the compiled
module's stub by mypy's stubtest.)"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import rxquant

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "python" / "rxquant"
# Modules the docs name as modules (not attributes of the package).
SUBMODULES = {"torch", "gguf", "onnx", "models", "formats", "core", "analysis", "adaptive", "apps"}


def test_all_lists_only_importable_names():
    for name in rxquant.__all__:
        assert hasattr(rxquant, name), name
    assert len(set(rxquant.__all__)) == len(rxquant.__all__)


def test_names_the_docs_show_are_public():
    text = "\n".join(p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])
    shown = set(re.findall(r"\b(?:rq|rxquant)\.([A-Za-z][A-Za-z_0-9]*)", text))
    missing = sorted(n for n in shown - SUBMODULES if n not in rxquant.__all__)
    assert not missing, f"the docs use rxquant names missing from __all__: {missing}"


def _private_uses(path: Path) -> list[str]:
    """`from m import _x` and `mod._x` where `mod` is an imported module, in one file."""
    tree = ast.parse(path.read_text())
    modules: set[str] = set()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            for a in node.names:
                if a.name.startswith("_") and not a.name.startswith("__"):
                    found.append(f"{path.name}:{node.lineno} imports {a.name}")
                modules.add(a.asname or a.name)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            found.append(f"{path.name}:{node.lineno} uses {node.value.id}.{node.attr}")
    return found


def test_private_names_stay_in_their_module():
    found = [u for p in sorted(PACKAGE.rglob("*.py")) for u in _private_uses(p)]
    assert not found, found


def test_the_private_name_check_finds_a_violation(tmp_path):
    p = tmp_path / "m.py"
    p.write_text("import numpy as np\nfrom .planner import _pareto\nnp._x\n")
    assert len(_private_uses(p)) == 2


def test_lazy_exports_match_what_type_checkers_see():
    """``rxquant.__init__`` imports each public name on first use (``_EXPORTS``); the imports
    type checkers read (under TYPE_CHECKING) must name the same modules."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    seen = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for imp in node.body:
                assert isinstance(imp, ast.ImportFrom)
                seen.update({a.name: "." * imp.level + (imp.module or "") for a in imp.names})
    assert seen == rxquant._EXPORTS
    assert set(rxquant.__all__) == {"__version__", *rxquant._EXPORTS}


def test_import_loads_only_what_is_used():
    """``import rxquant`` and the command line's module load no numpy (the GGUF command runs
    without it); a public name loads its module on first use."""
    import subprocess
    import sys

    code = (
        "import sys, rxquant, rxquant.apps.cli; a = 'numpy' in sys.modules; "
        "rxquant.Scheme('int8'); rxquant.quantize; print(a, 'numpy' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]
