"""Loading gr-rfdetect's compiled pybind11 modules (the kernels ``pip install`` builds with
setup.py and CMake builds too) from their file, not by name, so that a test can point at
another build's copy and compare it with pip's (:attr:`CompiledModule.folder`). The callers
fall back to NumPy, saying why, where this raises :class:`NativeUnavailable`.
"""
from __future__ import annotations

import glob
import importlib.util
import logging
import os
import threading
from typing import Optional


# a model-free detector's ``kernel`` option: the compiled kernel where it loads, always it, or
# the NumPy reference
KERNEL_CHOICES = ("auto", "compiled", "numpy")


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


class CompiledModule:
    """One compiled module, loaded at its first :meth:`load` and kept (or its error kept: it is
    looked for once). ``unavailable``: the NativeUnavailable subclass :meth:`load` raises;
    ``log`` and ``fallback``: where given, the first failure is logged as a warning saying
    what runs instead (once per process)."""

    def __init__(self, folder: str, stem: str, package: str, attributes: tuple, what: str, needs: str,
                 unavailable: type = NativeUnavailable, log: Optional[logging.Logger] = None, fallback: str = ""):
        self.folder, self.stem, self.package, self.attributes = folder, stem, package, attributes
        self.what, self.needs, self.unavailable, self.log, self.fallback = what, needs, unavailable, log, fallback
        self.module = None
        self.error = None
        self._lock = threading.Lock()

    def load(self):
        """The module (its file is ``load().__file__``), or ``unavailable`` saying why not."""
        with self._lock:
            if self.module is None and self.error is None:
                try:
                    self.module = import_module_file(self.folder, self.stem, self.package, self.attributes,
                                                     self.what, self.needs)
                except NativeUnavailable as e:
                    self.error = str(e)
                    if self.log is not None:
                        self.log.warning("%s; %s", e, self.fallback)
            if self.module is None:
                raise self.unavailable(self.error)
            return self.module

    def load_or_none(self):
        try:
            return self.load()
        except NativeUnavailable:
            return None

    def check_choice(self, choice: str, who: str, error: type = ValueError) -> None:
        """A detector's ``kernel`` option, checked when the detector is made: one of
        KERNEL_CHOICES (else ``error`` naming ``who``), and for "compiled" the module loaded
        now (else ``unavailable``), not at the first tile."""
        if choice not in KERNEL_CHOICES:
            raise error(f"{who}: kernel must be {', '.join(KERNEL_CHOICES[:-1])} or {KERNEL_CHOICES[-1]}, "
                        f"not {choice!r}")
        if choice == "compiled":
            self.load()

    def choose(self, choice: str):
        """The module a detector's ``kernel`` option (:meth:`check_choice`) picks: "numpy" None
        (the reference code), "compiled" the module or ``unavailable``, "auto" the module where
        it loads, else None."""
        return None if choice == "numpy" else self.load() if choice == "compiled" else self.load_or_none()
