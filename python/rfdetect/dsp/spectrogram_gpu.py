"""The spectrogram on a CUDA GPU (CuPy + cuFFT), and choosing where it runs.

:class:`StagedSpectrogramEngine` has the CPU engine's interface (``compute(x, n_rows,
out)``, ``frames_needed``, ``close``) and the same math: framing, the FFT-shift
window and :func:`rfdetect.dsp.spectrogram.rows_from_spectrum` run on the device, only
the FFT is the device library's. Samples go host -> staging buffer -> device, rows
come back the same way. What touches CUDA is the small :class:`_CupyOps` (pinned
buffers, one stream, cuFFT plans); :class:`NumpyOps` is the same interface on the
CPU, which is how the tests run this engine's framing, plan buckets and row math
where there is no GPU.

cuFFT plans: one per *size bucket* (powers of two up to ``PIECE_ROWS`` rows), not
per call size. GNU Radio hands the block a different number of rows almost every
call; a plan per size grew without bound, each holding a cuFFT work area in GPU
memory. A call is cut into pieces of at most ``PIECE_ROWS`` rows and each piece
runs through the plan of the smallest bucket that holds it (the extra rows are
computed and ignored), so an engine holds at most ``log2(PIECE_ROWS) + 1`` plans.

Not picked blindly: :func:`make_spectrogram_engine` computes a test frame on the GPU
and on the CPU at start and uses the GPU only when every row agrees within
``ROW_TOLERANCE``; otherwise (or when the GPU fails on that first contact) it warns
and uses the CPU. Run on an H100 in session 13 (tests/test_cuda.py; numbers in docs/performance.md);
the comparison, the fallback and the bucketed pipeline are also tested on the CPU
(tests/test_gpu_paths.py).
"""
from __future__ import annotations

import contextlib
import logging
from typing import Optional

import numpy as np

from ..gpu import GpuUnavailable, require_cupy
from .spectrogram import (RunningFloor, SpectrogramEngine, SpectrogramParams, _window, log, rows_from_spectrum,
                          say_once)

# largest |GPU row - CPU row| allowed (rows are in [0, 1]; 1e-3 is 0.06 dB at the
# default 60 dB range). Stated from float32 FFT rounding (about 1e-7 of the frame's
# strongest component, see spectrogram.KERNEL_TOLERANCE) with a 10x margin for a
# different FFT library. Measured on an H100 (cuFFT, CUDA 13): 1e-4 at most (tests/test_cuda.py).
ROW_TOLERANCE = 1e-3
DEVICES = ("auto", "cpu", "cuda")
# largest plan, in rows: bounds the plans (11 buckets: 1, 2, 4 ... 1024) and the device
# buffers (1024 x 4096 complex64 frames = 32 MiB at the default FFT size); the STFT
# Tile's output buffer is 1024 rows, so a full call is one piece
PIECE_ROWS = 1024
# rows of the start-up test frame: more than one bucket, so two plans are checked
CHECK_ROWS = 48


def plan_bucket(n_rows: int, largest: int = PIECE_ROWS) -> int:
    """The plan size for a piece of ``n_rows`` rows: the smallest power of two that
    holds it, at most ``largest`` (callers cut longer runs into pieces)."""
    if not 1 <= n_rows <= largest:
        raise ValueError(f"a piece holds 1..{largest} rows, not {n_rows}")
    return 1 << (n_rows - 1).bit_length()


class NumpyOps:
    """The device layer on the CPU (NumPy, FFTW plans through pyfftw where it is
    installed): runs :class:`StagedSpectrogramEngine` without a GPU."""

    xp = np

    def __init__(self):
        try:
            import pyfftw.builders
            self._builders = pyfftw.builders
        except ImportError:  # pragma: no cover - pyfftw is a declared dependency
            self._builders = None

    def scope(self):
        return contextlib.nullcontext()

    def staging(self, n: int, dtype) -> np.ndarray:
        return np.empty(n, dtype)

    def to_device(self, host, dev):
        dev[...] = host

    def to_host(self, dev, host):
        host[...] = dev

    def sliding_frames(self, d_in, n_rows: int, fft_size: int, hop: int):
        return np.lib.stride_tricks.as_strided(d_in, shape=(n_rows, fft_size),
                                               strides=(hop * d_in.itemsize, d_in.itemsize), writeable=False)

    def make_plan(self, frames):
        if self._builders is None:
            return None
        return self._builders.fft(frames, axis=-1, threads=1, planner_effort="FFTW_ESTIMATE",
                                  avoid_copy=False)

    def fft(self, frames, plan):
        if plan is None:
            import scipy.fft
            return scipy.fft.fft(frames, axis=-1, workers=1).astype(np.complex64, copy=False)
        return plan(frames)

    def wait(self):
        pass

    def close(self):
        pass


class _CupyOps:
    """The device layer on a CUDA GPU: page-locked staging buffers (asynchronous
    copies), one non-blocking stream per engine, cuFFT plans."""

    def __init__(self, index: int = 0):
        cupy = require_cupy(index)
        self.xp = cupy
        self.device = cupy.cuda.Device(index)
        with self.device:
            self.stream = cupy.cuda.Stream(non_blocking=True)

    def scope(self):
        stack = contextlib.ExitStack()
        stack.enter_context(self.device)
        stack.enter_context(self.stream)
        return stack

    def staging(self, n: int, dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        return np.frombuffer(self.xp.cuda.alloc_pinned_memory(n * dtype.itemsize), dtype, n)

    def to_device(self, host, dev):
        dev.set(host, stream=self.stream)  # pinned source: an asynchronous copy

    def to_host(self, dev, host):
        dev.get(stream=self.stream, out=host)

    def sliding_frames(self, d_in, n_rows: int, fft_size: int, hop: int):
        return self.xp.lib.stride_tricks.as_strided(d_in, shape=(n_rows, fft_size),
                                                    strides=(hop * d_in.itemsize, d_in.itemsize))

    def make_plan(self, frames):
        import cupyx.scipy.fftpack as fftpack
        return fftpack.get_fft_plan(frames, axes=(-1,), value_type="C2C")

    def fft(self, frames, plan):
        # with a plan given, CuPy uses it and bypasses its own per-size plan cache
        with plan:
            return self.xp.fft.fft(frames, axis=-1)

    def wait(self):
        self.stream.synchronize()

    def close(self):
        self.stream.synchronize()


class StagedSpectrogramEngine:
    """Spectrogram rows on a device (``ops``: :class:`_CupyOps` or :class:`NumpyOps`),
    in pieces of at most ``PIECE_ROWS`` rows, one FFT plan per size bucket."""

    def __init__(self, params: SpectrogramParams, ops):
        self.params = params
        self.ops = ops
        xp = ops.xp
        p = params
        # (-1)^n moves DC to the middle bin: the FFT shift for free (as on the CPU)
        w = _window(p) * np.where(np.arange(p.fft_size) % 2, -1, 1).astype(np.float32)
        with ops.scope():
            self._shifted_window = xp.asarray(w)
        self._bin_scale = 1.0 / float(np.sum(_window(p) ** 2))
        self.plans = {}  # bucket rows -> plan
        self._cap = 0  # rows the buffers hold (a bucket size)

    def close(self):
        self.plans.clear()
        self.ops.close()

    def frames_needed(self, n_rows: int) -> int:
        return n_rows * self.params.hop + self.params.history

    def _grow(self, rows: int):
        if rows <= self._cap:
            return
        xp, p, ops = self.ops.xp, self.params, self.ops
        n_samp = rows * p.hop + p.history
        self._stage_in = ops.staging(n_samp, np.complex64)
        self._stage_out = ops.staging(rows * p.width, np.float32).reshape(rows, p.width)
        self._d_in = xp.empty(n_samp, xp.complex64)
        # zeros: the rows of a bucket beyond a piece are transformed too (and ignored)
        self._d_frames = xp.zeros((rows, p.fft_size), xp.complex64)
        self._d_out = xp.empty((rows, p.width), xp.float32)
        self._d_floors = xp.empty((rows, 2), xp.float32)  # running_floor: each row's floor, quietest group
        self._cap = rows

    def _plan(self, bucket: int):
        plan = self.plans.get(bucket)
        if plan is None:
            plan = self.plans[bucket] = self.ops.make_plan(self._d_frames[:bucket])
        return plan

    def new_floor_state(self):
        """A stream's running_floor state (on the host: one small pass per call)."""
        return RunningFloor(self.params)

    def compute(self, x: np.ndarray, n_rows: int, out: Optional[np.ndarray] = None,
                floor_state=None) -> np.ndarray:
        p = self.params
        if out is None:
            out = np.empty((n_rows, p.width), dtype=np.float32)
        if n_rows == 0:
            return out
        need = self.frames_needed(n_rows)
        if len(x) < need:
            raise ValueError(f"need {need} samples for {n_rows} rows, got {len(x)}")
        floors = np.empty((n_rows, 2), np.float32) if p.normalisation == "running_floor" else None
        with self.ops.scope():
            for a in range(0, n_rows, PIECE_ROWS):
                n = min(PIECE_ROWS, n_rows - a)
                self._piece(x[a * p.hop:a * p.hop + self.frames_needed(n)], n, out[a:a + n],
                            None if floors is None else floors[a:a + n])
        if floors is not None:
            (floor_state or self.new_floor_state()).normalise(out, floors)
        return out

    def _piece(self, x, n: int, out, floors=None):
        p, xp, ops = self.params, self.ops.xp, self.ops
        bucket = plan_bucket(n)
        self._grow(bucket)
        need = len(x)
        self._stage_in[:need] = x
        d_in = self._d_in[:need]
        ops.to_device(self._stage_in[:need], d_in)
        frames = ops.sliding_frames(d_in, n, p.fft_size, p.hop)
        xp.multiply(frames, self._shifted_window, out=self._d_frames[:n])
        spec = ops.fft(self._d_frames[:bucket], self._plan(bucket))
        d_out = self._d_out[:n]
        d_floors = None if floors is None else self._d_floors[:n]
        rows_from_spectrum(xp, spec[:n], p, self._bin_scale, d_out, d_floors)
        ops.to_host(d_out, self._stage_out[:n])
        ops.wait()
        out[:] = self._stage_out[:n]
        if floors is not None:  # 8 bytes a row: no staging buffer
            floors[:] = xp.asnumpy(d_floors) if hasattr(xp, "asnumpy") else d_floors


class CudaSpectrogramEngine(StagedSpectrogramEngine):
    """The staged engine on CUDA GPU ``device`` (CuPy/cuFFT)."""

    def __init__(self, params: SpectrogramParams, device: int = 0):
        super().__init__(params, _CupyOps(device))


def check_frame(params: SpectrogramParams, n_rows: int = CHECK_ROWS) -> np.ndarray:
    """Samples for ``n_rows`` rows that exercise what rows depend on: noise (the floor),
    a strong and a weak tone (pooling, the dB mapping; 40 dB of range, within what
    float32 FFTs of any library resolve alike), a burst that starts mid-frame."""
    rng = np.random.default_rng(1234)
    n = n_rows * params.hop + params.history
    t = np.arange(n)
    x = (rng.standard_normal(n) + 1j * rng.standard_normal(n)) * np.sqrt(0.5)
    x += 100.0 * np.exp(2j * np.pi * 0.1234 * t) + 3.0 * np.exp(-2j * np.pi * 0.3011 * t)
    x[n // 3:n // 2] += 10.0 * np.exp(2j * np.pi * 0.02 * t[n // 3:n // 2] ** 1.01)
    return x.astype(np.complex64)


def row_tolerance(params: SpectrogramParams) -> float:
    """ROW_TOLERANCE in the rows' own unit: normalised rows map (db_high - db_low) dB
    to [0, 1]; plain-dB rows ("none") are in dB, so the same number of dB."""
    return ROW_TOLERANCE * (1.0 if params.normalisation != "none" else params.db_high - params.db_low)


def row_gap(got: np.ndarray, ref: np.ndarray, params: SpectrogramParams) -> float:
    """Largest |got - ref| (inf where ``got`` holds NaN or infinity). Normalised rows:
    every value. Plain-dB rows: the bins within (db_high - db_low) dB of the frame's
    strongest; deeper bins hold power near float32 rounding of the strong ones, where
    two FFT libraries differ by whole dB (a Rayleigh null of the noise, 40 dB down)."""
    if got.shape != ref.shape or not np.all(np.isfinite(got)):
        return float("inf")
    diff = np.abs(got.astype(np.float64) - ref)
    if params.normalisation == "none":
        diff = diff[ref >= ref.max() - (params.db_high - params.db_low)]
    return float(diff.max())


def row_difference(engine, reference, params: SpectrogramParams, n_rows: int = CHECK_ROWS) -> float:
    """Largest |row difference| of ``engine`` against ``reference`` on :func:`check_frame`
    (inf where a row holds NaN or infinity). Errors of ``engine`` propagate."""
    x = check_frame(params, n_rows)
    return row_gap(engine.compute(x, n_rows), reference.compute(x, n_rows), params)


def make_spectrogram_engine(params: SpectrogramParams, device: str = "auto", threads: Optional[int] = None,
                            say=None):
    """``device``: "cpu", "cuda"/"cuda:N" (the GPU, or the CPU with a warning, once,
    when there is none) or "auto" (the GPU when CuPy sees one, else the CPU, saying
    so once). A GPU is used only when its rows of a test frame agree with the CPU
    kernel's within :func:`row_tolerance`; otherwise, or when it fails on that frame, the
    CPU runs, with a warning naming the difference or the error. ``say(level,
    message)`` reports (default: the rfdetect.stft logger)."""
    d = str(device or "auto").strip().lower()
    if d == "cpu":
        return SpectrogramEngine(params, threads=threads)
    if d not in ("auto", "cuda") and not (d.startswith("cuda:") and d[5:].isdigit()):
        raise ValueError(f"device={device!r} must be 'auto', 'cpu', 'cuda' or 'cuda:N'")
    index = int(d[5:]) if d.startswith("cuda:") else 0
    def error(e):
        return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"

    # first contact: cuFFT, NVRTC, CUDA driver errors come in many types
    engine = problem = None
    try:
        engine = CudaSpectrogramEngine(params, index)
    except GpuUnavailable as e:
        level = logging.INFO if d == "auto" else logging.WARNING
        say_once(f"nogpu:{d}", level, f"STFT on the CPU: no GPU for it here ({e})", say)
        return SpectrogramEngine(params, threads=threads)
    except Exception as e:
        problem = f"it could not be set up ({error(e)})"
    cpu = SpectrogramEngine(params, threads=threads)
    tol = row_tolerance(params)
    if engine is not None:
        try:
            diff = row_difference(engine, cpu, params)
            if diff > tol:
                problem = (f"its rows of a test frame differ from the CPU kernel's by up to {diff:.3g} "
                           f"(tolerance {tol:.3g})")
        except Exception as e:
            problem = f"it failed on a test frame ({error(e)})"
    if problem:
        # every time, not once: each block that falls back should say why
        (say or log.log)(logging.WARNING, f"STFT on the CPU, not GPU {index}: {problem}")
        if engine is not None:
            with contextlib.suppress(Exception):
                engine.close()
        return cpu
    cpu.close()
    say_once(f"gpu:{index}", logging.INFO, f"STFT on GPU {index} (CuPy/cuFFT; test frame within "
             f"{diff:.2g} of the CPU rows)", say)
    return engine
