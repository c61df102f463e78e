"""The spectrogram on a CUDA GPU (CuPy + cuFFT), and choosing where it runs.

:class:`CudaSpectrogramEngine` has the CPU engine's interface (``compute(x, n_rows,
out)``, ``frames_needed``, ``close``) and the same math: framing, the FFT-shift
window and :func:`rfdetect.spectrogram.rows_from_spectrum` run on the device, only
the FFT is cuFFT's instead of FFTW's. Samples go host -> pinned buffer -> device
asynchronously on the engine's own stream; rows come back the same way. cuFFT plans
are cached per batch size.

Rows agree with the CPU engine to within ROW_TOLERANCE (float32 FFTs by different
libraries round differently; the floor normalisation amplifies nothing).
"""
from __future__ import annotations

import logging
from typing import Optional

import numpy as np

from .backends import GpuUnavailable, require_cupy
from .spectrogram import SpectrogramEngine, SpectrogramParams, _window, rows_from_spectrum, say_once

# largest |GPU row - CPU row| allowed (rows are in [0, 1]; 1e-3 is 0.06 dB at the
# default 60 dB range)
ROW_TOLERANCE = 1e-3
DEVICES = ("auto", "cpu", "cuda")

class CudaSpectrogramEngine:
    def __init__(self, params: SpectrogramParams, device: int = 0):
        cupy = require_cupy(device)
        self.cupy = cupy
        self.params = params
        self.device = cupy.cuda.Device(device)
        p = params
        with self.device:
            w = _window(p) * np.where(np.arange(p.fft_size) % 2, -1, 1).astype(np.float32)
            self._shifted_window = cupy.asarray(w)
            self._stream = cupy.cuda.Stream(non_blocking=True)
        self._bin_scale = 1.0 / float(np.sum(_window(p) ** 2))
        self._plans = {}
        self._cap = 0  # rows the buffers hold

    def close(self):
        self._plans.clear()

    def frames_needed(self, n_rows: int) -> int:
        return n_rows * self.params.hop + self.params.history

    def _grow(self, n_rows: int):
        if n_rows <= self._cap:
            return
        cupy, p = self.cupy, self.params
        cap = max(n_rows, 2 * self._cap)
        n_samp = cap * p.hop + p.history
        self._pin_in = np.frombuffer(cupy.cuda.alloc_pinned_memory(n_samp * 8), np.complex64, n_samp)
        self._pin_out = np.frombuffer(cupy.cuda.alloc_pinned_memory(cap * p.width * 4), np.float32,
                                      cap * p.width).reshape(cap, p.width)
        self._d_in = cupy.empty(n_samp, cupy.complex64)
        self._d_frames = cupy.empty((cap, p.fft_size), cupy.complex64)
        self._d_out = cupy.empty((cap, p.width), cupy.float32)
        self._cap = cap

    def _plan(self, n_rows: int):
        plan = self._plans.get(n_rows)
        if plan is None:
            import cupyx.scipy.fftpack as fftpack
            plan = fftpack.get_fft_plan(self._d_frames[:n_rows], axes=(-1,), value_type="C2C")
            self._plans[n_rows] = plan
        return plan

    def compute(self, x: np.ndarray, n_rows: int, out: Optional[np.ndarray] = None) -> np.ndarray:
        p, cupy = self.params, self.cupy
        if out is None:
            out = np.empty((n_rows, p.width), dtype=np.float32)
        if n_rows == 0:
            return out
        need = self.frames_needed(n_rows)
        if len(x) < need:
            raise ValueError(f"need {need} samples for {n_rows} rows, got {len(x)}")
        with self.device, self._stream:
            self._grow(n_rows)
            self._pin_in[:need] = x[:need]
            d_in = self._d_in[:need]
            d_in.set(self._pin_in[:need], stream=self._stream)
            frames = cupy.lib.stride_tricks.as_strided(
                d_in, shape=(n_rows, p.fft_size), strides=(p.hop * 8, 8))
            d_frames = self._d_frames[:n_rows]
            cupy.multiply(frames, self._shifted_window, out=d_frames)
            with self._plan(n_rows):
                spec = cupy.fft.fft(d_frames, axis=-1)
            d_out = self._d_out[:n_rows]
            rows_from_spectrum(cupy, spec, p, self._bin_scale, d_out)
            d_out.get(stream=self._stream, out=self._pin_out[:n_rows])
            self._stream.synchronize()
        out[:] = self._pin_out[:n_rows]
        return out


def make_spectrogram_engine(params: SpectrogramParams, device: str = "auto", threads: Optional[int] = None,
                            say=None):
    """``device``: "cpu", "cuda"/"cuda:N" (the GPU, or the CPU with a warning, once,
    when there is none) or "auto" (the GPU when CuPy sees one, else the CPU, saying
    so once). ``say(level, message)`` reports (default: the rfdetect.stft logger)."""
    d = str(device or "auto").strip().lower()
    if d == "cpu":
        return SpectrogramEngine(params, threads=threads)
    if d not in ("auto", "cuda") and not (d.startswith("cuda:") and d[5:].isdigit()):
        raise ValueError(f"device={device!r} must be 'auto', 'cpu', 'cuda' or 'cuda:N'")
    index = int(d[5:]) if d.startswith("cuda:") else 0
    try:
        engine = CudaSpectrogramEngine(params, index)
    except GpuUnavailable as e:
        level = logging.INFO if d == "auto" else logging.WARNING
        say_once(f"nogpu:{d}", level, f"STFT on the CPU: no GPU for it here ({e})", say)
        return SpectrogramEngine(params, threads=threads)
    say_once(f"gpu:{index}", logging.INFO, f"STFT on GPU {index} (CuPy/cuFFT)", say)
    return engine
