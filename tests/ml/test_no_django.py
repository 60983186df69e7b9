"""`ml` is a library of its own: usable from its command line and from notebooks without Django."""

import re
import subprocess
import sys
from pathlib import Path

ML_ROOT = Path(__file__).resolve().parents[2] / "ml"
DJANGO_IMPORT = re.compile(r"^\s*(?:import\s+django\b|from\s+django\b)", re.MULTILINE)


def ml_modules() -> list[str]:
    """Every importable module of the package; `__main__` runs the command line, so it is left out."""
    modules = []
    for path in sorted(ML_ROOT.rglob("*.py")):
        parts = path.relative_to(ML_ROOT.parent).with_suffix("").parts
        if parts[-1] == "__main__":
            continue
        modules.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return modules


def test_every_ml_module_imports_without_loading_django():
    modules = ml_modules()
    assert {"ml.io", "ml.encoding", "ml.pipeline", "ml.cli"} <= set(modules)
    code = f"import importlib, sys\nfor name in {modules!r}:\n    importlib.import_module(name)\n" + (
        "loaded = sorted(m for m in sys.modules if m == 'django' or m.startswith('django.'))\n"
        "assert not loaded, loaded\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=ML_ROOT.parent, capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr


def test_no_ml_source_file_imports_django():
    sources = ML_ROOT.rglob("*.py")
    offenders = [path.relative_to(ML_ROOT.parent) for path in sources if DJANGO_IMPORT.search(path.read_text())]
    assert offenders == []
