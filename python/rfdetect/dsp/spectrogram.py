"""The one spectrogram function.

Every spectrogram row in gr-rfdetect -- in the STFT Tile block, in the offline
``rfdetect detect`` path and in training data preparation -- is computed here, by
:meth:`SpectrogramEngine.compute`. Models silently degrade when training tiles and
live tiles differ, so nothing else may re-implement this math.

Row convention (documented in docs/architecture.md):

* The stream is preceded by ``fft_size - hop`` zeros; row ``r`` is the FFT of the
  windowed frame ``padded[r*hop : r*hop + fft_size]``, i.e. the frame that ends at
  sample ``(r+1)*hop``. A stream of ``n`` samples gives exactly ``n // hop`` rows, and
  every ``hop`` new samples give one row, which is what a GNU Radio decimating block
  with history needs.
* The continuous row coordinate ``y`` (row ``r`` spans ``[r, r+1)``) maps to sample
  ``y*hop + (hop - fft_size)/2`` -- the centre of frame ``r`` is the centre of row ``r``.
* Columns run from -fs/2 to +fs/2 (FFT-shifted); ``fft_size // width`` adjacent bins
  are pooled into one column (mean or max of power).
* Normalisation ``"floor"``: the row's noise floor is the 25th percentile of the
  mean power of 32 equal column groups (robust while signals cover under 3/4 of the
  band, and independent of receiver gain); values are dB above that floor mapped
  linearly from [db_low, db_high] to [0, 1] and clipped. Each row is normalised on
  its own, so rows never depend on how the stream was chunked.
* Normalisation ``"running_floor"``: the same mapping, above a floor that a signal
  covering most of the band cannot lift. Under ``"floor"`` a Wi-Fi channel filling
  83 % of a 20 MS/s capture *is* the 25th percentile, so its rows read as noise and the
  noise beside it as 17 dB below the floor; the gaps between its frames vanish. Each
  row also gives its quietest column group, and the spread between its floor and that
  group is tracked over the last RUNNING_FLOOR_ROWS rows: the median of the spreads
  within RUNNING_FLOOR_BAND_DB of their RUNNING_FLOOR_QUANTILE-th percentile (the rows
  where nothing wide was on). The row's floor is then min(its own floor, its quietest
  group + that spread + RUNNING_FLOOR_BAND_DB): a wideband burst leaves the quietest
  group (the band edges) where it was, so the floor stays within a dB of the noise; a
  receiver gain step moves every group, so the floor follows it in the same row; and a
  row of noise keeps its own floor, as under ``"floor"`` (without the dB, the lower of
  two noisy estimates would sit a dB under it). The state is a stream's
  (``RunningFloor``), so rows still never depend on how the stream was chunked, only on
  the rows before them; silent rows (zero or NaN frames) are not tracked.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

import numpy as np
import scipy.fft
import scipy.signal

from .compiled_rows import CompiledRows, KernelUnavailable, load, row_counter

# FFTW as planned here (FFTW_ESTIMATE) ran the NumPy kernel's 32 x 4096 batches 1.7x faster
# than SciPy's pocketfft in the run of bench/stft.py recorded in docs/performance.md
# (FFT-alone table, a loaded machine: a median of per-round ratios)
try:
    import pyfftw
except ImportError:  # pragma: no cover - pyfftw is a declared dependency
    pyfftw = None

WINDOWS = ("hann", "hamming", "blackman", "blackmanharris", "boxcar")
POOLING = ("mean", "max")
NORMALISATIONS = ("floor", "running_floor", "none")
# running_floor (module docstring): rows tracked, the low percentile of their spreads and
# the band over it whose median is taken. 256 rows outlast a cluster of Wi-Fi frames (60
# rows at 20 MS/s) while 10 % of them are quiet; the C++ kernel has the same constants.
RUNNING_FLOOR_ROWS = 256
RUNNING_FLOOR_QUANTILE = 10
RUNNING_FLOOR_BAND_DB = 1.0
# a row whose quietest group is at the power floor (1e-30: -300 dB) is silence (a zero or
# NaN frame): it says nothing of the receiver's spread and is not tracked
RUNNING_FLOOR_SILENT_DB = -290.0
FLOOR_GROUPS = 32
FLOOR_PERCENTILE = 25
# Rows per FFT batch: bounds each thread's aligned buffers (rows*fft_size*8 bytes); a
# partial batch gets a plan of its own size.
_BATCH_ROWS = 32
# ESTIMATE, not MEASURE: MEASURE picks an algorithm by timing it, so the last bits of a
# row (and the 16-bit training tiles, and the models trained on them) changed from run
# to run with the machine's load; ESTIMATE is deterministic (bench/stft.py's FFT table
# compares the two plans' speed).
_FFTW_PLANNING = "FFTW_ESTIMATE"
# Rows a thread takes at a time: NumPy, whole FFT batches; compiled (taken in C, no
# Python between chunks), a few rows, so that threads finish a call together.
_CHUNK_ROWS = {"compiled": 4, "numpy": _BATCH_ROWS}


KERNELS = ("auto", "compiled", "numpy")
# largest |compiled row - NumPy row| (rows in [0, 1]; 1e-4 is 0.006 dB at the default
# 60 dB range). The two kernels use different FFTW builds (the system's, pyfftw's),
# whose float32 FFTs round differently: about 1e-7 of the frame's strongest component,
# which is 1e-3 relative (0.004 dB) for a bin 80 dB below it.
KERNEL_TOLERANCE = 1e-4

log = logging.getLogger("rfdetect.stft")
_said = set()
_said_lock = threading.Lock()


def say_once(key: str, level: int, msg: str, say=None) -> None:
    """Log ``msg`` the first time ``key`` comes (engines are made per block and per
    recording; where they run is worth saying once per process). ``say(level, msg)``
    replaces the log, e.g. GNU Radio's."""
    with _said_lock:
        if key in _said:
            return
        _said.add(key)
    (say or log.log)(level, msg)


class SpectrogramConfigError(ValueError):
    """Spectrogram parameters that cannot work together."""


@dataclasses.dataclass(frozen=True)
class SpectrogramParams:
    """Everything that determines a spectrogram row; stored in every model card."""

    fft_size: int = 4096
    hop: int = 2048
    window: str = "hann"
    width: int = 1024
    pooling: str = "mean"
    normalisation: str = "running_floor"
    db_low: float = -10.0
    db_high: float = 50.0

    def __post_init__(self):
        problems = []
        if self.fft_size < 16 or self.fft_size & (self.fft_size - 1):
            problems.append(f"fft_size={self.fft_size} must be a power of two >= 16")
        if not 1 <= self.hop <= self.fft_size:
            problems.append(f"hop={self.hop} must be between 1 and fft_size={self.fft_size}")
        if self.window not in WINDOWS:
            problems.append(f"window={self.window!r} is not one of {WINDOWS}")
        if self.width < FLOOR_GROUPS or self.width > self.fft_size or self.fft_size % self.width:
            problems.append(
                f"width={self.width} must divide fft_size={self.fft_size} and be >= {FLOOR_GROUPS}")
        elif self.width % FLOOR_GROUPS:
            problems.append(f"width={self.width} must be a multiple of {FLOOR_GROUPS}")
        if self.pooling not in POOLING:
            problems.append(f"pooling={self.pooling!r} is not one of {POOLING}")
        if self.normalisation not in NORMALISATIONS:
            problems.append(f"normalisation={self.normalisation!r} is not one of {NORMALISATIONS}")
        if not self.db_high > self.db_low:
            problems.append(f"db_high={self.db_high} must exceed db_low={self.db_low}")
        if problems:
            raise SpectrogramConfigError("invalid spectrogram parameters: " + "; ".join(problems))

    @property
    def pool(self) -> int:
        return self.fft_size // self.width

    @property
    def history(self) -> int:
        """Samples of the previous stream a row needs besides its own ``hop``."""
        return self.fft_size - self.hop

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SpectrogramParams":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise SpectrogramConfigError(f"unknown spectrogram parameters: {sorted(unknown)}")
        return cls(**d)

    def differing_fields(self, other: "SpectrogramParams") -> list[str]:
        """Names of the fields that differ, in field order (empty when equal)."""
        a, b = self.to_dict(), other.to_dict()
        return [k for k in a if a[k] != b[k]]

    def differences(self, other: "SpectrogramParams", fields=None) -> list[str]:
        """Human-readable list of fields that differ (empty when equal); ``fields``: only these."""
        a, b = self.to_dict(), other.to_dict()
        return [f"{k}: {a[k]!r} != {b[k]!r}" for k in self.differing_fields(other) if fields is None or k in fields]

    def level(self, db_above_floor: float) -> float:
        """Normalised pixel value of a power ``db_above_floor`` dB over the noise floor."""
        return float(np.clip((db_above_floor - self.db_low) / (self.db_high - self.db_low), 0, 1))

    def db_above_floor(self, value):
        """Inverse of :meth:`level` (for unclipped values)."""
        return np.asarray(value) * (self.db_high - self.db_low) + self.db_low

    @property
    def db_per_unit(self) -> float:
        """dB per unit of pixel value: db_high - db_low, or 1 under ``"none"`` (plain dB)."""
        return 1.0 if self.normalisation == "none" else float(self.db_high - self.db_low)

    # --- geometry: pixel coordinates <-> samples and Hz -------------------------
    def row_to_sample(self, y):
        """Continuous row coordinate -> sample index (may be fractional or negative)."""
        return np.asarray(y, dtype=np.float64) * self.hop + (self.hop - self.fft_size) / 2.0

    def sample_to_row(self, s):
        return (np.asarray(s, dtype=np.float64) - (self.hop - self.fft_size) / 2.0) / self.hop

    def column_to_offset_hz(self, x, sample_rate: float):
        """Continuous column coordinate -> frequency offset from the centre (Hz)."""
        x = np.asarray(x, dtype=np.float64)
        return (x / self.width - 0.5) * sample_rate - 0.5 * sample_rate / self.fft_size

    def offset_hz_to_column(self, f, sample_rate: float):
        f = np.asarray(f, dtype=np.float64)
        return ((f + 0.5 * sample_rate / self.fft_size) / sample_rate + 0.5) * self.width


def own_grid_error(params: SpectrogramParams, own: SpectrogramParams, detector: str) -> Optional[str]:
    """What is wrong with rows of ``params`` for a model-free detector that reads only rows of
    its own grid ``own`` (plain dB, unpooled: its thresholds are in that grid's bins and rows);
    None where they are those rows."""
    diffs = params.differences(own, fields=("fft_size", "hop", "window", "width", "normalisation"))
    if not diffs:
        return None
    return (f"the {detector} detector reads plain-dB rows of unpooled bins (fft {own.fft_size}, hop {own.hop}, "
            f"width {own.width}, normalisation {own.normalisation}); these rows differ ({'; '.join(diffs)}): give it "
            f"an STFT Tile of its own, as `rfdetect detect --model {detector}` does")


def _window(params: SpectrogramParams) -> np.ndarray:
    return scipy.signal.get_window(params.window, params.fft_size, fftbins=True).astype(np.float32)


class _FftBatch:
    """One thread's FFTs: FFTW plans (one per batch size, made on first use; FFTW's
    in-process wisdom makes repeats instant) over one aligned buffer pair, or SciPy's
    pocketfft when pyfftw is missing. The windowed copy of the frames goes straight
    into the aligned input buffer."""

    def __init__(self, fft_size: int):
        self.fft_size = fft_size
        self._plans = {}
        if pyfftw is not None:
            self.inp = pyfftw.empty_aligned((_BATCH_ROWS, fft_size), dtype="complex64")
            self.outp = pyfftw.empty_aligned((_BATCH_ROWS, fft_size), dtype="complex64")
        else:
            self.inp = np.empty((_BATCH_ROWS, fft_size), dtype=np.complex64)

    def _plan(self, n):
        plan = self._plans.get(n)
        if plan is None:
            plan = pyfftw.FFTW(self.inp[:n], self.outp[:n], axes=(-1,), threads=1,
                               flags=(_FFTW_PLANNING, "FFTW_DESTROY_INPUT"))
            self._plans[n] = plan
        return plan

    def __call__(self, frames: np.ndarray, window: np.ndarray) -> np.ndarray:
        n = len(frames)
        if pyfftw is None:
            np.multiply(frames, window, out=self.inp[:n])
            return scipy.fft.fft(self.inp[:n], axis=-1, workers=1)
        plan = self._plan(n)  # planning may overwrite the buffers: plan first
        np.multiply(frames, window, out=self.inp[:n])
        plan.execute()  # releases the GIL
        return self.outp[:n]


class SpectrogramEngine:
    """Computes normalised spectrogram rows on the CPU.

    ``compute(x, n_rows, out)``: ``x`` holds ``n_rows*hop + history`` complex64
    samples (the ``history`` samples that precede the first new sample, then the new
    ones); ``out`` receives ``n_rows`` rows of ``width`` float32 values. Work is split
    over ``threads`` threads (both kernels run without the GIL, so two cores give
    about twice one).

    ``kernel``: ``"compiled"`` is the C++ kernel (gr-rfdetect/lib/stft_rows.cc through the pybind11
    module ``_stft_rows``; window, FFT and the row math fused
    per frame; about 2x the NumPy kernel), ``"numpy"`` is pyfftw + :func:`rows_from_spectrum`,
    ``"auto"`` the compiled one where it was built (said once in the log where it was
    not). The two agree within ``KERNEL_TOLERANCE``; ``self.kernel`` says which runs.
    """

    def __init__(self, params: SpectrogramParams, threads: Optional[int] = None, kernel: str = "auto"):
        if kernel not in KERNELS:
            raise SpectrogramConfigError(f"kernel={kernel!r} is not one of {KERNELS}")
        self.params = params
        self.window = _window(params)
        # Multiplying by (-1)^n moves DC to the middle bin: the FFT shift for free.
        self._shifted_window = self.window * np.where(np.arange(params.fft_size) % 2, -1, 1).astype(np.float32)
        p = params
        # |X|^2 / sum(w^2): white noise of variance s^2 reads s^2 in every bin
        self._bin_scale = 1.0 / float(np.sum(self.window ** 2))
        if threads is None:
            threads = min(2, os.cpu_count() or 1)
        self.threads = max(1, int(threads))
        self._pool = ThreadPoolExecutor(self.threads - 1) if self.threads > 1 else None
        self._parts = None
        if kernel != "numpy":
            try:
                self._parts = [CompiledRows(p, self._shifted_window, self._bin_scale) for _ in range(self.threads)]
            except KernelUnavailable as e:
                if kernel == "compiled":
                    raise
                say_once("numpy-rows", logging.WARNING, f"spectrogram rows with NumPy (about half the speed): {e}")
        self.kernel = "numpy" if self._parts is None else "compiled"
        if self._parts is None:
            self._parts = [_FftBatch(p.fft_size) for _ in range(self.threads)]

    def close(self):
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None
        for part in self._parts or ():
            if isinstance(part, CompiledRows):
                part.close()

    # An engine serves one caller at a time; each part of a call owns one kernel state.
    def frames_needed(self, n_rows: int) -> int:
        return n_rows * self.params.hop + self.params.history

    def new_floor_state(self):
        """A stream's running_floor state for rows of this engine (the kernel's own)."""
        if self.kernel == "compiled":
            p = self.params
            return load().RunningFloor(p.width, p.db_low, p.db_high)
        return RunningFloor(self.params)

    def compute(self, x: np.ndarray, n_rows: int, out: Optional[np.ndarray] = None,
                floor_state=None) -> np.ndarray:
        """Rows; with normalisation running_floor, normalised by ``floor_state`` (a
        stream's :meth:`new_floor_state`; None: a fresh one, as at a stream's start)."""
        p = self.params
        if out is None:
            out = np.empty((n_rows, p.width), dtype=np.float32)
        if n_rows == 0:
            return out
        if p.normalisation == "running_floor":
            floors = np.empty((n_rows, 2), np.float32)
            self._rows(x, n_rows, out, floors)
            (floor_state or self.new_floor_state()).normalise(out, floors)
            return out
        return self._rows(x, n_rows, out, None)

    def _rows(self, x, n_rows, out, floors):
        p = self.params
        if len(x) < self.frames_needed(n_rows):
            raise ValueError(f"need {self.frames_needed(n_rows)} samples for {n_rows} rows, got {len(x)}")
        x = np.ascontiguousarray(x, dtype=np.complex64)
        # Threads take chunks of rows as they come free (an even split left one thread
        # idle whenever the other was preempted by the upstream blocks sharing the cores);
        # compiled: one call per thread sharing an atomic counter, NumPy: a shared iterator.
        step = _CHUNK_ROWS[self.kernel]
        helpers = 0 if self._pool is None else min(self.threads, -(-n_rows // step)) - 1
        if self.kernel == "compiled":
            counter = row_counter()
            futures = [self._pool.submit(self._parts[part].rows, x, n_rows, out, counter, step, floors)
                       for part in range(1, helpers + 1)]
            made = self._parts[0].rows(x, n_rows, out, counter, step, floors)
            made += sum(f.result() for f in futures)
            assert made == n_rows, (made, n_rows)
            return out
        frames = np.lib.stride_tricks.sliding_window_view(x, p.fft_size)[::p.hop][:n_rows]
        starts = iter(range(0, n_rows, step))
        futures = [self._pool.submit(self._drain, part, starts, frames, out, n_rows, floors)
                   for part in range(1, helpers + 1)]
        self._drain(0, starts, frames, out, n_rows, floors)
        for f in futures:
            f.result()
        return out

    def _drain(self, part, starts, frames, out, n_rows, floors):
        for a in starts:  # next() on a range iterator is atomic under the GIL
            b = min(n_rows, a + _BATCH_ROWS)
            self._compute_batch(self._parts[part], frames[a:b], out[a:b], None if floors is None else floors[a:b])

    def _compute_batch(self, fft, frames, out, floors=None):
        spec = fft(frames, self._shifted_window)
        if spec.dtype != np.complex64:  # pocketfft on old SciPy promotes; stay in float32
            spec = spec.astype(np.complex64)
        rows_from_spectrum(np, spec, self.params, self._bin_scale, out, floors)

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def rows_from_spectrum(xp, spec, p: SpectrogramParams, bin_scale, out, floors=None) -> None:
    """FFT-shifted spectra [n, fft_size] complex64 -> normalised rows in ``out``
    [n, width] float32. ``xp`` is NumPy or CuPy: the CPU and GPU engines share this.
    running_floor: ``out`` gets plain dB and ``floors`` [n, 2] each row's floor and
    quietest column group in dB, for :class:`RunningFloor`."""
    n = len(spec)
    ri = spec.view(xp.float32)
    if p.pooling == "mean":
        # sum of squares over each column's (re, im) pairs; einsum, not BLAS: OpenBLAS
        # serialises calls from several threads
        pairs = ri.reshape(n * p.width, 2 * p.pool)
        power = xp.einsum("ij,ij->i", pairs, pairs).reshape(n, p.width)
        power *= xp.float32(bin_scale / p.pool)
    else:
        xp.square(ri, out=ri)
        bins = ri.reshape(n, p.width, p.pool, 2).sum(axis=-1)
        power = bins.max(axis=-1) * xp.float32(bin_scale)
    xp.maximum(power, xp.float32(1e-30), out=power)
    xp.log10(power, out=out)
    if p.normalisation == "floor":
        k = (FLOOR_GROUPS * FLOOR_PERCENTILE) // 100
        groups = power.reshape(n, FLOOR_GROUPS, p.width // FLOOR_GROUPS).mean(axis=-1)
        floor = xp.partition(groups, k, axis=1)[:, k]
        offset = (10.0 * xp.log10(floor) + p.db_low) / (p.db_high - p.db_low)
        out *= xp.float32(10.0 / (p.db_high - p.db_low))
        out -= offset.astype(xp.float32)[:, None]
        xp.maximum(out, xp.float32(0.0), out=out)  # np.clip is 5x slower here
        xp.minimum(out, xp.float32(1.0), out=out)
    else:
        out *= xp.float32(10.0)  # plain dB of the pooled power
        if floors is not None:
            k = (FLOOR_GROUPS * FLOOR_PERCENTILE) // 100
            groups = xp.sort(power.reshape(n, FLOOR_GROUPS, p.width // FLOOR_GROUPS).mean(axis=-1), axis=1)
            floors[:, 0] = xp.log10(groups[:, k]) * xp.float32(10.0)
            floors[:, 1] = xp.log10(groups[:, 0]) * xp.float32(10.0)


class RunningFloor:
    """One stream's ``running_floor`` state (module docstring): :meth:`normalise` turns
    plain-dB rows into normalised rows in place, given their ``floors`` [n, 2] (the
    row's floor and quietest group, dB) from the kernel, in stream order. NumPy; the C++
    kernel's ``RunningFloor`` does the same in the same order."""

    def __init__(self, params: SpectrogramParams):
        self.params = params
        self._spread = np.zeros(0, np.float32)  # the last RUNNING_FLOOR_ROWS - 1 spreads, oldest first

    def normalise(self, rows: np.ndarray, floors: np.ndarray) -> None:
        n, w = len(rows), RUNNING_FLOOR_ROWS
        if n == 0:
            return
        floors = np.asarray(floors, np.float32)
        f, lowest = floors[:n, 0], floors[:n, 1]
        tracked = (lowest > np.float32(RUNNING_FLOOR_SILENT_DB)) & np.isfinite(f - lowest)
        before = len(self._spread)
        seen = np.concatenate([self._spread, (f - lowest)[tracked]])
        self._spread = seen[-(w - 1):].copy()
        # each row's window: the last w tracked spreads up to and including its own (NaN
        # before the stream began: sorted last, not counted)
        padded = np.concatenate([np.full(w - before, np.nan, np.float32), seen])
        ends = np.cumsum(tracked)  # tracked spreads of this call up to each row
        win = np.sort(np.lib.stride_tricks.sliding_window_view(padded, w)[ends], axis=1)
        count = w - np.isnan(win).sum(axis=1)
        at = np.arange(n)
        lo = win[at, np.maximum(count - 1, 0) * RUNNING_FLOOR_QUANTILE // 100]
        within = (win <= (lo + np.float32(RUNNING_FLOOR_BAND_DB))[:, None]).sum(axis=1)
        cap = lowest + win[at, np.maximum(within - 1, 0) // 2] + np.float32(RUNNING_FLOOR_BAND_DB)
        floor = np.where(count > 0, np.minimum(f, cap), f)  # nothing tracked yet: the row's own
        p = self.params
        rows -= (floor + np.float32(p.db_low))[:, None]
        rows /= np.float32(p.db_high - p.db_low)
        np.clip(rows, 0.0, 1.0, out=rows)


def spectrogram(iq: np.ndarray, params: SpectrogramParams, engine: Optional[SpectrogramEngine] = None,
                chunk_rows: int = 4096) -> np.ndarray:
    """Offline spectrogram of a whole array: ``len(iq) // hop`` rows, same as the block."""
    engine = engine or SpectrogramEngine(params)
    iq = np.asarray(iq, dtype=np.complex64)
    n_rows = len(iq) // params.hop
    out = np.empty((n_rows, params.width), dtype=np.float32)
    stream = StreamingSpectrogram(params, engine)
    done = 0
    step = chunk_rows * params.hop
    for a in range(0, len(iq), step):
        rows = stream.push(iq[a:a + step])
        out[done:done + len(rows)] = rows
        done += len(rows)
    assert done == n_rows
    return out


class StreamingSpectrogram:
    """Feeds arbitrary chunks of samples and returns the rows they complete."""

    def __init__(self, params: SpectrogramParams, engine: Optional[SpectrogramEngine] = None):
        self.params = params
        self.engine = engine or SpectrogramEngine(params)
        self._carry = np.zeros(params.history, dtype=np.complex64)
        self._floor = self.engine.new_floor_state() if params.normalisation == "running_floor" else None
        self.rows_out = 0

    def push(self, samples: np.ndarray) -> np.ndarray:
        p = self.params
        buf = np.concatenate([self._carry, np.asarray(samples, dtype=np.complex64)])
        n_rows = (len(buf) - p.history) // p.hop
        rows = self.engine.compute(buf, n_rows, floor_state=self._floor)
        used = n_rows * p.hop
        self._carry = buf[used:].copy()
        self.rows_out += n_rows
        return rows


def params_json(params: SpectrogramParams) -> str:
    return json.dumps(params.to_dict(), sort_keys=True)
