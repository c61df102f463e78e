"""Loading gr-rfdetect's compiled pybind11 modules (the kernels ``pip install`` builds with
setup.py and CMake builds too) from their file, not by name, so that a test can point at
another build's copy and compare it with pip's. The callers keep what they loaded and fall
back to NumPy, saying why, where this raises :class:`NativeUnavailable`.
"""
from __future__ import annotations

import glob
import importlib.util
import os


class NativeUnavailable(RuntimeError):
    """A compiled module is not installed or does not load."""


def import_module_file(folder: str, stem: str, package: str, attributes: tuple, what: str, needs: str):
    """The module ``package.stem`` from ``folder/stem*.so``, which must have ``attributes``
    (an older build may lack them). ``what`` names it in the error; ``needs`` says what its
    build needs."""
    found = sorted(glob.glob(os.path.join(folder, f"{stem}*.so")))
    if not found:
        raise NativeUnavailable(f"{what} ({stem}*.so) is not in {folder}: it was not built at install time "
                                f"(needs {needs})")
    try:
        spec = importlib.util.spec_from_file_location(f"{package}.{stem}", found[0])
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        for name in attributes:
            getattr(mod, name)
    except (ImportError, OSError, AttributeError) as e:
        raise NativeUnavailable(f"{what} {found[0]} does not load: {e}") from e
    return mod
