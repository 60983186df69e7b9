"""The project's compiled loops (`make venv` builds each `.so` beside its `.c`), loaded with ctypes.

ctypes lets go of Python's GIL for the length of each call, so a loop runs beside the worker's
other threads. Each caller keeps a NumPy fallback for a machine without a C compiler.
"""

import ctypes
from collections.abc import Sequence
from pathlib import Path


def load_library(
    path: Path, function: str, argtypes: Sequence[type], restype: type = ctypes.c_int
) -> ctypes.CDLL | None:
    """The shared library at `path` with `function`'s signature set; None when it is not built."""
    try:
        library = ctypes.CDLL(str(path))
    except OSError:
        return None
    entry = getattr(library, function)
    entry.argtypes = list(argtypes)
    entry.restype = restype
    return library
