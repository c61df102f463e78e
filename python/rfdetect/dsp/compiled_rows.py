"""The compiled CPU kernel for spectrogram rows (lib/stft_rows.c), through ctypes.

Built by ``pip install`` (setup.py) and by the CMake build next to this file as
``_stft_rows*.so``. :func:`load` returns the library, or raises
:class:`KernelUnavailable` saying why (not built: no C compiler or FFTW headers where
the package was installed); :class:`rfdetect.dsp.spectrogram.SpectrogramEngine` then
computes the same rows with NumPy.
"""
from __future__ import annotations

import ctypes
import glob
import os
import threading

import numpy as np

_HERE = os.path.dirname(os.path.abspath(__file__))
_lock = threading.Lock()
_lib = None
_error = None


class KernelUnavailable(RuntimeError):
    """The compiled spectrogram kernel is not installed or does not load."""


def load() -> ctypes.CDLL:
    global _lib, _error
    with _lock:
        if _lib is None and _error is None:
            found = sorted(glob.glob(os.path.join(_HERE, "_stft_rows*.so")))
            if not found:
                _error = (f"the compiled spectrogram kernel (_stft_rows*.so) is not in {_HERE}: it was not "
                          "built at install time (needs a C compiler and FFTW's headers, Debian: gcc "
                          "libfftw3-dev)")
            else:
                try:
                    lib = ctypes.CDLL(found[0])
                    lib.rfd_stft_create.restype = ctypes.c_void_p
                    lib.rfd_stft_create.argtypes = [ctypes.c_int] * 4 + [ctypes.c_float] * 3 + [ctypes.c_void_p]
                    lib.rfd_stft_rows.restype = None
                    lib.rfd_stft_rows.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long, ctypes.c_long,
                                                  ctypes.c_void_p]
                    lib.rfd_stft_rows_shared.restype = ctypes.c_long
                    lib.rfd_stft_rows_shared.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long,
                                                         ctypes.c_long, ctypes.c_void_p,
                                                         ctypes.POINTER(ctypes.c_long), ctypes.c_long]
                    lib.rfd_stft_destroy.restype = None
                    lib.rfd_stft_destroy.argtypes = [ctypes.c_void_p]
                    _lib = lib
                except (OSError, AttributeError) as e:
                    _error = f"the compiled spectrogram kernel {found[0]} does not load: {e}"
        if _lib is None:
            raise KernelUnavailable(_error)
        return _lib


def row_counter() -> ctypes.c_long:
    """The counter several :meth:`CompiledRows.rows` calls share to split one batch."""
    return ctypes.c_long(0)


class CompiledRows:
    """One thread's kernel state (its FFT plan and frame buffers): ``rows(x, n_rows,
    out)`` fills ``out[:n_rows]`` from complex64 samples ``x`` (``n_rows*hop +
    history`` of them), exactly like ``SpectrogramEngine.compute``. With a shared
    ``counter`` (:func:`row_counter`), threads each calling ``rows`` on the same batch
    take chunks of ``chunk`` rows in turn until all are made; it returns the rows this
    call made."""

    def __init__(self, params, shifted_window: np.ndarray, bin_scale: float):
        self._lib = load()
        self.params = params
        self._window = np.ascontiguousarray(shifted_window, dtype=np.float32)
        self._state = self._lib.rfd_stft_create(params.fft_size, params.width, params.pooling == "max",
                                                params.normalisation == "floor", params.db_low, params.db_high,
                                                bin_scale, self._window.ctypes.data)
        if not self._state:
            raise KernelUnavailable(f"the compiled spectrogram kernel could not plan fft_size={params.fft_size} "
                                    "(out of memory?)")

    def rows(self, x: np.ndarray, n_rows: int, out: np.ndarray, counter=None, chunk: int = 16) -> int:
        # the C side reads x and writes out through raw pointers: check what it relies on
        if not self._state:
            raise RuntimeError("this spectrogram kernel state was closed")
        if x.dtype != np.complex64 or not x.flags.c_contiguous:
            raise ValueError("samples must be a contiguous complex64 array")
        if out.dtype != np.float32 or not out.flags.c_contiguous or out.shape[1:] != (self.params.width,) \
                or len(out) < n_rows:
            raise ValueError(f"out must be a contiguous float32 array of at least {n_rows} rows of "
                             f"{self.params.width}")
        if len(x) < n_rows * self.params.hop + self.params.history:
            raise ValueError(f"need {n_rows * self.params.hop + self.params.history} samples for {n_rows} rows")
        if counter is None:
            self._lib.rfd_stft_rows(self._state, x.ctypes.data, n_rows, self.params.hop, out.ctypes.data)
            return n_rows
        return self._lib.rfd_stft_rows_shared(self._state, x.ctypes.data, n_rows, self.params.hop,
                                              out.ctypes.data, ctypes.byref(counter), int(chunk))

    def close(self):
        if self._state:
            self._lib.rfd_stft_destroy(self._state)
            self._state = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
