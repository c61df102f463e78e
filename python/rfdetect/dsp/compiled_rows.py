"""The compiled CPU kernel for spectrogram rows: the pybind11 module ``_stft_rows``
(C++, gr-rfdetect/lib/stft_rows.cc; the C++ STFT Tile block runs the same code).

Built by ``pip install`` (setup.py) and by the CMake build next to this file as
``_stft_rows*.so``. :func:`load` returns the module, or raises
:class:`KernelUnavailable` saying why (not built: no C++ compiler, FFTW headers or
pybind11 where the package was installed); :class:`rfdetect.dsp.spectrogram.SpectrogramEngine`
then computes the same rows with NumPy.

The module is loaded from its file in this folder (``KERNEL.folder``), not by name, so that
a test can point at another build's copy (CMake's) and compare it with pip's.
"""
from __future__ import annotations

import os

import numpy as np

from .compiled_modules import CompiledModule, NativeUnavailable

class KernelUnavailable(NativeUnavailable):
    """The compiled spectrogram kernel is not installed or does not load."""


# an old ctypes build has neither class
KERNEL = CompiledModule(os.path.dirname(os.path.abspath(__file__)), "_stft_rows", "gnuradio.rfdetect.dsp", ("StftRows", "RowCounter"),
                        "the compiled spectrogram kernel",
                        "a C++ compiler, FFTW's headers and pybind11, Debian: g++ libfftw3-dev pybind11-dev",
                        unavailable=KernelUnavailable)


def load():
    """The ``_stft_rows`` extension module (its file is ``load().__file__``)."""
    return KERNEL.load()


def row_counter():
    """The counter several :meth:`CompiledRows.rows` calls share to split one batch."""
    return load().RowCounter()


class CompiledRows:
    """One thread's kernel state (its FFT plan and frame buffers): ``rows(x, n_rows,
    out)`` fills ``out[:n_rows]`` from complex64 samples ``x`` (``n_rows*hop +
    history`` of them), exactly like ``SpectrogramEngine.compute``; without floor
    normalisation and with ``floors`` [n_rows, 2] it also gives each row's floor and
    quietest column group (dB), for running_floor. With a shared
    ``counter`` (:func:`row_counter`), threads each calling ``rows`` on the same batch
    take chunks of ``chunk`` rows in turn until all are made; it returns the rows this
    call made. The rows run without the GIL."""

    def __init__(self, params, shifted_window: np.ndarray, bin_scale: float):
        lib = load()
        self.params = params
        try:
            self._state = lib.StftRows(params.fft_size, params.width, params.pooling == "max",
                                       params.normalisation == "floor", params.db_low, params.db_high,
                                       bin_scale, np.ascontiguousarray(shifted_window, dtype=np.float32))
        except (RuntimeError, MemoryError) as e:
            raise KernelUnavailable(f"the compiled spectrogram kernel could not plan fft_size={params.fft_size}: "
                                    f"{e}") from e

    def rows(self, x: np.ndarray, n_rows: int, out: np.ndarray, counter=None, chunk: int = 16, floors=None) -> int:
        # the C++ side checks these too; here they are named as callers expect
        if self._state is None:
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
            return self._state.rows(x, n_rows, self.params.hop, out, floors)
        return self._state.rows_shared(x, n_rows, self.params.hop, out, counter, int(chunk), floors)

    def close(self):
        self._state = None  # frees the plan and buffers (the C++ destructor)

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
