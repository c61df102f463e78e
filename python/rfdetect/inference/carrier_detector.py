"""The model-free carrier detector: continuous carriers (NBFM and AM voice, CW tones).

The trained models miss most of them at VHF/UHF (docs/training.md, "Continuous carriers"):
the receiver's own lines (DC, LO leakage, spurs) look exactly like a carrier, are not
signals, and the models were taught them as background. What tells a carrier from a
receiver line is time: a receiver line is on for all of the capture, a transmitter keys up
and down. This detector runs on a spectrogram of its own, :data:`CARRIER_SPECTROGRAM` (fft
4096, hop 2048, plain dB: a tone is two of its bins wide, the box convention of ``rfdetect
synth``), and reports a carrier only where it is wider than a line, or a line that starts or
stops inside the tile and is not on for three quarters of it (step 4).

On a tile of plain-dB rows (at least MIN_TILE_ROWS of them; a non-finite pixel reads as no
power):

1. power over each row's noise floor (the row's median / ln 2: a receiver's gain step moves
   the floor and the carrier alike);
2. candidates: regions of at least ``min_rows`` rows where an ``smooth_rows`` x 3 mean is
   over ``min_db`` (3 dB), outside the ``edge_fraction`` of columns at each band edge (the
   receiver's roll-off: a carrier there is not looked for); each gives the column of its
   time-averaged peak, the carrier's column (strongest first; one within ``same_column``
   columns of a column already taken is the same carrier). A carrier whose region drifts in
   frequency (a transmitter's oscillator warming up; ``rfdetect synth``'s drift, up to 1 % of
   the rate over a recording) is followed along a straight line through the power-weighted
   centre of the region's rows, where the line explains them and moves
   ``min_drift_columns`` or more: the rows are shifted to stand it in one column, steps 3-5
   run there, and each box is widened over the columns it crossed;
3. the carrier's rows: where a 3-row mean of its three columns is over ``on_db`` (2 dB). A
   gap between them is filled where it is under 3 rows, or where the power in it is over the
   floor by more than the lower of ``gap_sigmas`` noise deviations of a mean over as many
   pixels and ``gap_share`` of the carrier's own power over the floor: a weak carrier dips
   under the threshold from the noise alone; a keyed one drops to the floor. Runs of under
   ``min_rows`` / 2 rows are dropped. A gap shorter than the window (2 ms at 2 MS/s), or than
   the 3 rows always filled, does not show;
4. for each run, the time-averaged spectrum over its rows, less the noise beside it (the 25th
   percentile of the 513 columns about it, or the floor where that is lower: the receiver's
   filters shape the noise by tenths of a dB), and its band: the columns about the carrier's
   column, within 64 of it, whose 3-column mean is ``band_db`` (1 dB of the floor) over that.
   Kept where:

   - its three columns are on for ``min_on_share`` of the rows and hold ``min_line_share``
     of the band's power, or ``min_line_share_long`` where the run lasts ``voice_s`` or
     more: a carrier has a line where its power gathers; a burst of FSK or TDMA has none,
     and lasts tens of ms; strong FM voice spreads its power over its deviation, and lasts
     seconds;
   - a band wider than ``line_columns`` loses under ``dip_depth`` of the median of the
     DIP_ROWS rows about it in at most ``max_dip_share`` of its rows (not counting 2 rows at
     each end; a run under DIP_ROWS + 4 rows is not tested): FM and AM hold their power
     (fading moves it slowly); a train of TDMA bursts drops between them (at 5 MS/s a 2.5 ms
     slot gap is a row or two);
   - it is not a receiver line: at most ``line_columns`` wide, and on for all of the tile or
     in a column on for three quarters of it (the 25th percentile of a 16-row mean over
     ``held_db``), as a weak spur is where it dips into the noise;
   - its peak is ``min_peak_db`` over the noise;
5. boxes: a run at most ``line_columns`` wide is a line (label ``tone``), boxed two bins wide
   about its peak (:func:`postprocess.peak_offset`); a wider one is a voice carrier (label
   ``signal``: AM or FM is not told apart), boxed over its band, at a lower level where the
   run is long enough to average the noise down (``band_sigmas`` deviations of the mean, and
   at least ``min_box_excess``). The runs of one carrier column of which any is wide are one
   transmission and are joined across gaps of up to ``join_s``. Lengths in seconds are in
   rows of the rate the Detector sets, or of ASSUMED_SAMPLE_RATE.

The costs, measured on tuning recordings (docs/runtime.md, "Continuous carriers"): a tone
keyed on for three quarters of a tile or more, with gaps shorter than the window, reads as
a receiver line and is not reported; an AM carrier too weak for its sidebands to show is
boxed as a line; a train of TDMA bursts is sometimes one box.

Score: ``1 / (1 + exp(-(peak_db - SCORE_MIDPOINT_DB) / 2))`` of the carrier column's mean
power over the noise beside it (step 4): 0.5 at 14 dB, as ``pulse``'s.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Optional

import numpy as np
import scipy.ndimage as ndi

from ..dsp.compiled_modules import CompiledModule
from ..dsp.spectrogram import SpectrogramParams, own_grid_error
from .energy_detector import PixelBox
from .postprocess import db_score, peak_offset

CARRIER_SPECTROGRAM = SpectrogramParams(fft_size=4096, hop=2048, window="hann", width=4096, normalisation="none")
SCORE_MIDPOINT_DB = 14.0
# the rows about each row whose median its power is judged against (the TDMA test, step 4)
DIP_ROWS = 31
# a shorter tile cannot tell a receiver line (on for three quarters of it) from a keyed carrier
MIN_TILE_ROWS = 128
# a drifting carrier is followed on this many columns each side of it: the 256 whose noise its
# band is measured against (_column_boxes), and a few more
DRIFT_SPAN = 260
# rows are taken to be this rate's where the Detector has not set one (a bare tile)
ASSUMED_SAMPLE_RATE = 2e6


# the compiled kernel, the pybind11 module beside this file (built by ``pip install`` and by
# CMake): step 1 and the smoothing of step 2, the same float32 values as _power_numpy's to an
# ulp or two, and step 2's regions, the same as _regions_numpy's
KERNEL = CompiledModule(os.path.dirname(os.path.abspath(__file__)), "_carrier_power", "gnuradio.rfdetect.inference",
                        ("power", "regions"), "the compiled carrier kernel",
                        "a C++ compiler and pybind11, Debian: g++ pybind11-dev", log=logging.getLogger("rfdetect.carrier"),
                        fallback="the carrier detector computes its power maps and regions with NumPy and SciPy "
                                 "(about twice its CPU)")
# the compiled kernel's largest relative difference from _power_numpy's values: NumPy's float32
# power and the kernel's own 10 ** x are each within an ulp of the exact value, so they differ
# by an ulp at some pixels, and the floor, the power over it and the means carry that ulp
# (tests/test_carrier_detector.py, bench/model_free.py)
POWER_TOLERANCE = 2e-6
# the highest dB pixel the kernel is given: 10 ** 30 is float32's; above it both overflow alike,
# but the NumPy path is the one documented for such tiles
KERNEL_MAX_DB = 300.0


class CarrierConfigError(ValueError):
    pass


def kernel_takes(tile: np.ndarray) -> bool:
    """Whether the compiled kernel computes this (finite) tile: it has pixels, all under
    KERNEL_MAX_DB."""
    return bool(tile.size) and float(np.max(tile)) < KERNEL_MAX_DB


def _edges(spectrum: np.ndarray, k: int, level: float) -> tuple[int, int]:
    """The first and last column of the run of ``spectrum`` over ``level`` about column ``k``."""
    a = k
    while a > 0 and spectrum[a - 1] > level:
        a -= 1
    b = k
    while b < len(spectrum) - 1 and spectrum[b + 1] > level:
        b += 1
    return a, b


def _running_mean_down(x: np.ndarray, size: int) -> np.ndarray:
    """``ndi.uniform_filter1d(x, size, axis=0, mode="nearest")``, the same float32 values (a
    running sum in double, updated row by row, over ``size``: SciPy 1.10's arithmetic; where
    ``size`` is a power of two, as the detector's 8 rows, any order of that division gives the
    same values), in under half its time on a tile 4096 wide: SciPy reads each column's pixels
    16 kB apart; this reads whole rows."""
    before, after = size // 2, size - size // 2 - 1
    padded = np.concatenate([np.repeat(x[:1], before, axis=0), x, np.repeat(x[-1:], after, axis=0)])
    out = np.empty(x.shape, np.float32)
    running = padded[:size].astype(np.float64).sum(axis=0)  # rows added in order, as scipy does
    np.divide(running, size, out=out[0])
    step = np.empty(x.shape[1], np.float64)
    for row in range(1, len(x)):
        np.subtract(padded[row + size - 1], padded[row - 1], out=step, dtype=np.float64)
        running += step
        np.divide(running, size, out=out[row], casting="same_kind")
    return out


def _closed_3x3(mask: np.ndarray) -> np.ndarray:
    """``ndi.binary_closing(mask, np.ones((3, 3)))`` (nothing outside the tile: its edge pixels
    are eroded), the same pixels, as shifted ORs and ANDs: about 30 times faster on a tile
    4096 wide than scipy's generic structuring-element loop."""
    n, w = mask.shape
    padded = np.zeros((n + 2, w + 2), bool)
    padded[1:-1, 1:-1] = mask
    across = padded[:, :-2] | padded[:, 1:-1] | padded[:, 2:]
    padded[1:-1, 1:-1] = across[:-2] | across[1:-1] | across[2:]  # dilated
    padded[0], padded[-1], padded[:, 0], padded[:, -1] = False, False, False, False
    across = padded[:, :-2] & padded[:, 1:-1] & padded[:, 2:]
    return across[:-2] & across[1:-1] & across[2:]


def _db(x):
    return float(10.0 * np.log10(max(float(x), 1e-12)))


@dataclass
class CarrierDetector:
    params: SpectrogramParams = CARRIER_SPECTROGRAM
    min_db: float = 3.0
    min_peak_db: float = 6.0
    on_db: float = 2.0
    band_db: float = 1.0
    band_sigmas: float = 5.0
    min_box_excess: float = 0.1  # linear, over the noise: 0.4 dB
    smooth_rows: int = 8
    min_rows: int = 20
    same_column: int = 2
    gap_sigmas: float = 3.0
    gap_share: float = 0.2
    min_line_share: float = 0.7
    min_line_share_long: float = 0.3
    voice_s: float = 0.1
    max_dip_share: float = 0.045
    dip_depth: float = 0.1
    min_on_share: float = 0.9
    line_columns: int = 7
    held_db: float = 1.0
    join_s: float = 0.015
    edge_fraction: float = 0.05
    min_drift_columns: float = 3.0
    drift_fit_columns: float = 2.0
    sample_rate: Optional[float] = None  # set by the Detector (set_sample_rate)
    label: str = "signal"
    tone_label: str = "tone"
    name: str = "carrier"
    # the power maps' and regions' code: "auto" (the compiled kernel where it loads, else NumPy),
    # "compiled" (NativeUnavailable without it) or "numpy" (the reference)
    kernel: str = "auto"

    def __post_init__(self):
        problem = own_grid_error(self.params, CARRIER_SPECTROGRAM, self.name)
        if problem:
            raise CarrierConfigError(problem)
        KERNEL.check_choice(self.kernel, self.name, CarrierConfigError)

    def reported_labels(self) -> list:
        return [self.label, self.tone_label]

    def check_tile_height(self, rows: int) -> None:
        if int(rows) < MIN_TILE_ROWS:
            raise CarrierConfigError(
                f"the {self.name} detector needs tiles of at least {MIN_TILE_ROWS} rows (tile height {rows}): it "
                f"follows a carrier down the tile, and tells a receiver's line by how much of the tile it holds")

    def set_sample_rate(self, sample_rate: float) -> None:
        self.sample_rate = float(sample_rate)

    def _rows_of(self, seconds: float) -> int:
        return int(np.ceil(seconds * (self.sample_rate or ASSUMED_SAMPLE_RATE) / self.params.hop))

    def _dip_share(self, band: np.ndarray) -> float:
        """The share of rows whose power over the floor in the band is under ``dip_depth`` of the
        median of the DIP_ROWS rows about them: a carrier, FM or AM, holds its power (fading
        moves it slowly); a train of bursts drops between them. Rows whose median is too close
        to the noise to tell do not count."""
        per_row = (band[2:-2] - 1.0).sum(axis=1)  # not the rows its start and end spread into
        if len(per_row) < DIP_ROWS:
            return 0.0
        local = ndi.median_filter(per_row, DIP_ROWS, mode="nearest")
        clear = local > 5.0 * np.sqrt(band.shape[1])
        if not clear.any():
            return 0.0
        return float(np.mean(per_row[clear] < self.dip_depth * local[clear]))

    def _runs(self, x: np.ndarray, on: np.ndarray) -> list:
        """Step 3: runs of ``on`` rows, with gaps that are not keyed off filled."""
        on = on.copy()  # the caller's rows stay as measured: the share of them on is a test of its own
        excess = float(x[on].mean() - 1.0) if on.any() else 0.0
        gaps, _ = ndi.label(~on)
        for (sl,) in ndi.find_objects(gaps):
            if sl.start == 0 or sl.stop == len(on):
                continue
            g = sl.stop - sl.start
            if g < 3 or float(x[sl].mean()) - 1.0 > min(self.gap_sigmas / np.sqrt(3.0 * g), self.gap_share * excess):
                on[sl] = True
        runs, _ = ndi.label(on)
        return [sl for (sl,) in ndi.find_objects(runs) if sl.stop - sl.start >= max(self.min_rows // 2, 3)]

    def _column_boxes(self, power: np.ndarray, kc: int) -> list:
        n, w = power.shape
        x = power[:, max(kc - 1, 0):kc + 2].mean(axis=1)
        on = ndi.uniform_filter1d(x, 3) > 10 ** (self.on_db / 10)
        runs = self._runs(x, on)
        # on for three quarters of the tile or more, even where a weak one dips into the noise
        held = float(np.percentile(ndi.uniform_filter1d(x, 16), 25)) > 10 ** (self.held_db / 10)
        out = []
        for sl in runs:
            c0, c1 = max(kc - 64, 0), min(kc + 65, w)
            # over the noise beside it: the floor is the row's median, and the receiver's
            # filters shape the noise by a few tenths of a dB from column to column
            around = power[sl, max(kc - 256, 0):kc + 257].mean(axis=0)
            s = power[sl, c0:c1].mean(axis=0) - max(float(np.percentile(around, 25)), 1.0)
            k = kc - c0
            smooth = ndi.uniform_filter1d(s, 3)
            a, b = _edges(smooth, k, 10 ** (self.band_db / 10) - 1.0)
            columns = b - a + 1
            band = float(np.clip(s[a:b + 1], 0, None).sum())
            line = float(np.clip(s[max(k - 1, 0):k + 2], 0, None).sum()) / max(band, 1e-12)
            # the box's edges: lower where the run is long enough to average the noise down
            # (band_sigmas deviations of a mean over its rows x 3 columns)
            box_level = max(self.band_sigmas / np.sqrt(3.0 * (sl.stop - sl.start)), self.min_box_excess)
            if box_level < 10 ** (self.band_db / 10) - 1.0:
                a, b = _edges(smooth, k, box_level)
            long_enough = sl.stop - sl.start >= self._rows_of(self.voice_s)
            if float(on[sl].mean()) < self.min_on_share \
                    or line < (self.min_line_share_long if long_enough else self.min_line_share):
                continue
            if columns > self.line_columns and self._dip_share(power[sl, c0 + a:c0 + b + 1]) > self.max_dip_share:
                continue  # a train of bursts (TDMA), not one carrier
            if (held or sl.start <= 1 and sl.stop >= n - 1) and columns <= self.line_columns:
                continue  # a receiver line: on for all of the tile
            peak_db = _db(s[k])
            if peak_db < self.min_peak_db:
                continue
            score = db_score(peak_db, SCORE_MIDPOINT_DB)
            if columns <= self.line_columns:
                centre = kc + 0.5 + (peak_offset(s[k - 1:k + 2]) if 0 < k < len(s) - 1 else 0.0)
                out.append(PixelBox(centre - 1.0, float(sl.start), centre + 1.0, float(sl.stop), score,
                                    self.tone_label, round(peak_db, 2)))
            else:
                out.append(PixelBox(float(c0 + a), float(sl.start), float(c0 + b + 1), float(sl.stop), score,
                                    self.label, round(peak_db, 2)))
        return self._joined(out)

    def _joined(self, boxes: list) -> list:
        """Step 5: the runs of a carrier column of which any is wide, joined across short gaps."""
        if not any(b.label == self.label for b in boxes):
            return boxes
        gap = self._rows_of(self.join_s)
        boxes = sorted(boxes, key=lambda b: b.y0)
        out = [boxes[0]]
        for b in boxes[1:]:
            a = out[-1]
            if b.y0 - a.y1 <= gap:
                best = a if a.score >= b.score else b
                out[-1] = PixelBox(min(a.x0, b.x0), a.y0, max(a.x1, b.x1), max(a.y1, b.y1), best.score,
                                   self.label, best.snr_db)
            else:
                out.append(b)
        return out

    def detect(self, tile: np.ndarray) -> list[PixelBox]:
        tile = np.asarray(tile, np.float32)
        if not np.isfinite(tile).all():  # a NaN would spread down its column and across its row's floor
            tile = np.where(np.isfinite(tile), tile, np.float32(-300.0))
        if tile.shape[0] < self.min_rows:
            return []
        power, smooth = self._power(tile)
        labels, regions = self._regions(smooth)
        candidates = []
        for i, ys, xs in regions:
            spectrum = power[ys, xs].mean(axis=0)
            candidates.append((float(spectrum.max()), xs.start + int(np.argmax(spectrum)), i, ys, xs))
        out, columns = [], []
        for _, kc, i, ys, xs in sorted(candidates, key=lambda c: (-c[0], c[1])):
            if any(abs(kc - c) <= self.same_column for c in columns):
                continue
            columns.append(kc)
            drift = self._drift(smooth, labels, i, ys, xs)
            out.extend(self._drifting_boxes(power, ys, drift) if drift else self._column_boxes(power, kc))
        return out

    def _power(self, tile: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(each pixel's power over its row's floor, that power's ``smooth_rows`` x 3 mean):
        the compiled kernel's (gr-rfdetect/lib/carrier_power.cc: the same values to float32
        rounding, in about a third of the time and without the GIL) where it loads (``kernel``)
        and every pixel is under KERNEL_MAX_DB, else :meth:`_power_numpy`'s."""
        kernel = KERNEL.choose(self.kernel)
        if kernel is not None and kernel_takes(tile):
            return kernel.power(np.ascontiguousarray(tile, np.float32), self.smooth_rows)
        return self._power_numpy(tile)

    def _power_numpy(self, tile: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Steps 1 and 2's maps in NumPy and SciPy: the kernel's reference."""
        lin = np.power(np.float32(10.0), tile / np.float32(10.0))
        floor = np.median(lin, axis=1) / np.float32(np.log(2.0))
        power = lin / np.maximum(floor, np.float32(1e-30))[:, None]
        smooth = ndi.uniform_filter1d(_running_mean_down(power, self.smooth_rows), 3, axis=1, mode="nearest")
        return power, smooth

    def _regions(self, smooth: np.ndarray) -> tuple[np.ndarray, list]:
        """Step 2's candidate regions: (labels, [(label, rows, columns)] of those at least
        ``min_rows`` rows tall, as slices, in label order), the compiled kernel's (the same
        regions as :meth:`_regions_numpy`, in about a third of its time and without the GIL)
        where it loads (``kernel``), else :meth:`_regions_numpy`'s."""
        kernel = KERNEL.choose(self.kernel)
        if kernel is None:
            return self._regions_numpy(smooth)
        labels, regions = kernel.regions(np.ascontiguousarray(smooth, np.float32), self._level(),
                                         self._edge_columns(smooth.shape[1]), self.min_rows)
        return labels, [(i, slice(y0, y1), slice(x0, x1)) for i, y0, y1, x0, x1 in regions]

    def _regions_numpy(self, smooth: np.ndarray) -> tuple[np.ndarray, list]:
        """Step 2's regions with NumPy and SciPy: the kernel's reference. The pixels of
        ``smooth`` over ``min_db``, outside the receiver's roll-off at the band edges, closed
        by 3 x 3 and labelled 8-connected."""
        w = smooth.shape[1]
        mask = smooth > self._level()
        edge = self._edge_columns(w)
        mask[:, :edge] = False
        mask[:, w - edge:] = False
        labels, _ = ndi.label(_closed_3x3(mask), structure=np.ones((3, 3), bool))
        return labels, [(i + 1, ys, xs) for i, (ys, xs) in enumerate(ndi.find_objects(labels))
                        if ys.stop - ys.start >= self.min_rows]

    def _level(self) -> np.float32:
        return np.float32(10 ** (self.min_db / 10))

    def _edge_columns(self, width: int) -> int:
        """Columns left out at each band edge (the receiver's roll-off): at least one."""
        return max(1, int(np.ceil(width * self.edge_fraction)))

    def _drift(self, smooth: np.ndarray, labels: np.ndarray, i: int, ys: slice, xs: slice) -> Optional[tuple]:
        """Step 2b: a carrier whose frequency drifts (a transmitter's oscillator warming up, or
        an offset changing with the receiver's): the straight line through the power-weighted
        centre of each of its region's rows, where that line explains them (within
        ``drift_fit_columns``, or a tenth of the region's width for a voice carrier's
        sidebands) and moves ``min_drift_columns`` or more over the region, as (columns per
        row, column at the tile's row 0); else None, and the carrier is followed down one
        column."""
        # pixels the mask's closing filled in may lie under the floor: they weigh nothing
        sub = np.where(labels[ys, xs] == i, np.clip(smooth[ys, xs] - 1.0, 0.0, None), 0.0)
        weight = sub.sum(axis=1)
        rows = np.flatnonzero(weight > 0)
        if len(rows) < self.min_rows:
            return None
        centre = (sub[rows] * np.arange(sub.shape[1])).sum(axis=1) / weight[rows]
        slope, start = np.polyfit(rows, centre, 1)
        if abs(slope) * (ys.stop - ys.start) < self.min_drift_columns:
            return None
        miss = float(np.median(np.abs(centre - (start + slope * rows))))
        if miss > max(self.drift_fit_columns, 0.1 * sub.shape[1]):
            return None
        return float(slope), float(start + xs.start - slope * ys.start)

    def _drifting_boxes(self, power: np.ndarray, ys: slice, drift: tuple) -> list:
        """A drifting carrier's boxes: the rows are shifted so that the carrier stands in one
        column (the noise past the band's edges reads as the floor), followed there as any
        carrier (:meth:`_column_boxes`), and each box is widened back over the columns the
        carrier crossed during its rows. Only runs that overlap the region's rows ``ys`` are
        its: another region on the same line (the carrier keyed again) gives its own."""
        n, w = power.shape
        slope, start = drift
        track = start + slope * np.arange(n)
        kc = int(round(float(np.clip(track[(ys.start + ys.stop) // 2], 0, w - 1))))
        shift = np.round(track - kc).astype(np.int64)
        # only the columns _column_boxes reads: the noise 256 about the carrier
        lo, hi = max(kc - DRIFT_SPAN, 0), min(kc + DRIFT_SPAN + 1, w)
        cols = np.arange(lo, hi)[None, :] + shift[:, None]
        inside = (cols >= 0) & (cols < w)
        straight = np.where(inside, power[np.arange(n)[:, None], np.clip(cols, 0, w - 1)], np.float32(1.0))
        out = []
        for b in self._column_boxes(straight, kc - lo):
            if b.y1 <= ys.start or b.y0 >= ys.stop:
                continue
            rows = shift[max(int(b.y0), 0):max(int(np.ceil(b.y1)), int(b.y0) + 1)]
            x0 = float(np.clip(lo + b.x0 + rows.min(), 0, w))
            x1 = float(np.clip(lo + b.x1 + rows.max(), 0, w))
            out.append(PixelBox(x0, b.y0, x1, b.y1, b.score, b.label, b.snr_db))
        return out
