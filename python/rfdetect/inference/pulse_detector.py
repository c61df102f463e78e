"""The model-free pulse detector: radar-like pulses of a few microseconds.

The trained models see rows of 2048 samples (102 us at 20 MS/s, 1 ms at 2 MS/s), so a pulse
of 1-20 us fills a few percent of one window and shows 0-0.3 dB of contrast there
(docs/training.md, "Radar pulses are not in the models' spectrograms"). This detector runs
on a spectrogram of its own, fine enough in time to hold a pulse in a row or two:
:data:`PULSE_SPECTROGRAM` (fft 32, hop 16, plain dB). ``rfdetect detect`` gives it a branch
of its own beside the models (``--model wideband --model pulse``); in a flowgraph it needs
its own STFT Tile at those settings.

On a tile of plain-dB rows:

1. power over each column's noise floor (the median / ln 2 of the column's FLOOR_ROWS-row block
   of the tile: the mean of noise);
2. a 2-row x 3-column mean, divided by the local background: the mean of the same three
   columns over ``context_rows`` rows ending ``gap_rows`` before the pixel and over as many
   starting ``gap_rows`` after it, the higher of the two and never under the floor. Where a
   pulse can be longer than that gap (``max_length_s`` at the sample rate the Detector sets:
   from about 1 MS/s), the same with a gap of half the longest pulse too, the better of
   the two ratios: a long pulse would otherwise be its own background. A pulse stands out of
   the noise and of a signal it sits beside alike (but see step 5); a signal's own start or
   end does not, for one of its two sides is the signal itself;
3. regions above ``min_contrast_db`` (8-connected) of at most ``max_length_s`` (and the
   window's spread); a region too close to the tile's top or bottom for its background to
   be measured is left to the neighbouring tile (the Detector's tiles overlap);
4. the box: the pulse's rows (below; one row of margin each side, the window's spread) and
   a band. A 32-point FFT cannot show the band of a pulse a window long or longer, so it is
   boxed at +-2/length about its centre (main lobe and first sidelobes: where ``rfdetect
   synth`` puts the box of an unmodulated pulse). The pulse's rows run out from the region
   while its columns hold a quarter of the peak row's power over the floor (the middle of
   a long pulse stands less above a background it partly fills itself), and its length is
   the hop times that power summed over those rows over its plateau (the median of the
   rows over half the peak's): the pulse's length when it spans a window or
   more (the window's own weight cancels), a little more for a shorter one. A pulse whose
   -3 dB columns span more than ``swept_ratio`` times that band (and more than the band and
   the two columns a tone spreads over) is a swept (LFM) pulse: those columns are its band;
5. the band step: the pulse's power over the floor, summed over its band widened by
   ``step_margin_columns`` each side, in its strongest row, at least ``min_step_db`` over the
   same sum's mean over ``context_rows`` rows ending ``gap_rows`` before its box, and as many
   after (the higher; never under one column of noise). A pulse comes out of its band's background;
   a symbol of a frequency-keyed burst (drone telemetry, Bluetooth) only takes over the power
   its neighbouring tone held a symbol before, so the widened band does not step up. The
   cost: a pulse whose widened band reaches a signal beside it that is on for too little of
   the block for the floor to take it in (under half) steps up only by its own power over that
   signal's, and is lost where that is under 9 dB (docs/runtime.md). Chosen on tuning
   recordings (docs/training.md, session 32): with it, the contrast threshold could come down
   from 11 to 9 dB.

Score: ``1 / (1 + exp(-(contrast_db - SCORE_MIDPOINT_DB) / 2))`` of the region's peak
contrast over its background: 0.08 at the 9 dB threshold, 0.18 at 11 dB, 0.5 at 14 dB, 0.88 at
18 dB.
Label ``pulse``: anything pulsed (radar, but also on-off keying) is reported; no claim is
made about what sent it.

Steps 1 and 2 run in a compiled kernel (gr-rfdetect/lib/pulse_contrast.cc, the pybind11 module
``_pulse_contrast`` beside this file) where it was built: the same values as
:meth:`PulseDetector._contrast_numpy`, the reference, to float32 rounding
(:data:`CONTRAST_TOLERANCE`), 2.6-2.9 times less CPU per second of signal, without the GIL.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Optional

import numpy as np
import scipy.ndimage as ndi

from ..dsp.spectrogram import SpectrogramParams, own_grid_error
from ..dsp.compiled_modules import CompiledModule
from .energy_detector import PixelBox
from .postprocess import db_score, peak_offset

PULSE_SPECTROGRAM = SpectrogramParams(fft_size=32, hop=16, window="hann", width=32, normalisation="none")
# the tile height of the pulse branch that ``rfdetect detect`` and the IQ Detector build, whatever
# the networks' (65,536 samples: 27 ms at 2.4 MS/s): at the networks' 1024 rows (896 new) a 2 MS/s
# capture makes 140 of its tiles a second, and the Detector's work per tile, not the pixels, held
# it under real time (docs/runtime.md, "`pulse` beside `narrowband`")
PULSE_TILE_ROWS = 4096
# the rows each column's floor is the median of (step 1): the tile height the detector was
# tuned on (sessions 21-32), whatever the tile's
FLOOR_ROWS = 1024
# the contrast scored 0.5: fixed where the threshold was before session 32 (11 dB + 3), so that
# pulses rank against a model's boxes as they did and the pulses the lower threshold adds rank last
SCORE_MIDPOINT_DB = 14.0
# regions of one pulse on the same rows as far apart as this are one pulse (:func:`_joined`)
JOIN_GAP_COLUMNS = 2.0

# the compiled contrast kernel's largest relative difference from _contrast_numpy's values
# allowed (measured: 5.3e-7 over 7,182 tiles of 44 radar and VHF/UHF tuning recordings, with
# the same boxes, in session 47 with powf; 5.2e-7 over the 1,314 4096-row tiles of the same
# recordings with the kernels' own exp2, session 49; float32 rounding of 10 ** x, the sums'
# order and np.median's mean)
CONTRAST_TOLERANCE = 2e-6

# the highest dB pixel the kernel is given, and the most a pixel may stand over the tile's
# quietest (_kernel_takes)
KERNEL_MAX_DB = 300.0
KERNEL_MAX_RANGE_DB = 360.0

# the compiled contrast kernel, the pybind11 module beside this file (built by ``pip install``
# and by CMake)
KERNEL = CompiledModule(os.path.dirname(os.path.abspath(__file__)), "_pulse_contrast", "gnuradio.rfdetect.inference",
                        ("contrast",), "the compiled pulse contrast kernel",
                        "a C++ compiler and pybind11, Debian: g++ pybind11-dev", log=logging.getLogger("rfdetect.pulse"),
                        fallback="the pulse detector computes its contrast with NumPy (2.5-3 times its CPU)")


class PulseConfigError(ValueError):
    pass


@dataclass
class PulseDetector:
    params: SpectrogramParams = PULSE_SPECTROGRAM
    min_contrast_db: float = 9.0
    min_step_db: float = 9.0
    step_margin_columns: int = 4
    max_length_s: float = 25e-6
    max_rows: int = 32  # while the sample rate is not known
    context_rows: int = 6
    gap_rows: int = 2
    sample_rate: Optional[float] = None  # set by the Detector (set_sample_rate)
    edge_fraction: float = 0.05
    swept_ratio: float = 2.5
    label: str = "pulse"
    name: str = "pulse"
    # the contrast map's code: "auto" (the compiled kernel where it loads, else NumPy),
    # "compiled" (NativeUnavailable without it) or "numpy" (the reference)
    kernel: str = "auto"
    # the Detector's DC zone (DC_HALF_WIDTH_BINS columns each side: +-2.5 MHz of 32 columns
    # at 20 MS/s) would hide real pulses, and a DC spike is a line, never a pulse
    dc_zone = False

    def reported_labels(self) -> list:
        return [self.label]

    def __post_init__(self):
        problem = own_grid_error(self.params, PULSE_SPECTROGRAM, self.name)
        if problem:
            raise PulseConfigError(problem)
        KERNEL.check_choice(self.kernel, self.name, PulseConfigError)

    def set_sample_rate(self, sample_rate: float) -> None:
        self.sample_rate = float(sample_rate)

    def _rows(self) -> tuple[int, int]:
        """(the most rows a pulse spans, the long gap): ``max_length_s`` at the sample rate,
        the window's spread and a row of margin; the long gap half that, where it is longer
        than ``gap_rows`` (from about 1 MS/s)."""
        if not self.sample_rate:
            return self.max_rows, self.gap_rows
        rows = int(np.ceil(self.max_length_s * self.sample_rate / self.params.hop)) + 2
        return rows, max(self.gap_rows, rows // 2 + 1)

    def _contrast(self, tile: np.ndarray, long_gap: int) -> tuple[np.ndarray, np.ndarray]:
        """(each pixel's 2 x 3 mean over its local background (step 2), each pixel's power
        over its column's floor), linear: the compiled kernel's (gr-rfdetect/lib/pulse_contrast.cc,
        the same values to float32 rounding, several times faster and without the GIL) where it
        loads (``kernel``) and takes the tile (:func:`_kernel_takes`), else
        :meth:`_contrast_numpy`'s."""
        kernel = KERNEL.choose(self.kernel)
        if kernel is not None and _kernel_takes(tile):
            return kernel.contrast(np.ascontiguousarray(tile, np.float32), FLOOR_ROWS, self.context_rows,
                                   sorted({self.gap_rows, long_gap}))
        return self._contrast_numpy(tile, long_gap)

    def _contrast_numpy(self, tile: np.ndarray, long_gap: int) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`_contrast` in NumPy and SciPy: the reference, and what runs without the
        kernel. The ratio is the higher of the two with the background ``gap_rows`` and
        ``long_gap`` rows away."""
        lin = np.power(np.float32(10.0), np.asarray(tile, np.float32) / np.float32(10.0))
        for rows in _floor_blocks(len(lin)):
            floor = _column_medians(lin[rows]) / np.float32(np.log(2.0))
            floor = np.maximum(floor, np.median(floor) / 2)  # a column a signal filled: not above the others' floor
            lin[rows] /= np.maximum(floor, np.float32(1e-30))[None, :]
        smooth = ndi.uniform_filter(lin, size=(2, 3), mode="nearest")
        cols = ndi.uniform_filter1d(lin, 3, axis=1, mode="nearest")
        csum = np.concatenate([np.zeros((1, lin.shape[1]), np.float64), np.cumsum(cols, axis=0, dtype=np.float64)])
        n, k = len(lin), self.context_rows
        # the mean of the k rows from each row on, where they lie in the tile; float32 before the
        # maxima below, which rounding to float32 (monotonic) leaves as they were in float64
        whole = ((csum[k:] - csum[:-k]) / k).astype(np.float32)
        best = np.zeros_like(smooth)
        before, after = np.empty_like(smooth), np.empty_like(smooth)
        for g in sorted({self.gap_rows, long_gap}):
            # the k rows ending g before each row, and the k rows starting g after it: windows
            # that lie in the tile are slices of ``whole``; near its top and bottom, the rows
            # of the window that are in it
            top, bottom = min(g + k, n), max(n - g - k, 0)
            before[top:] = whole[:n - top]
            after[:bottom] = whole[1 + g:1 + g + bottom]
            r = np.arange(top)
            before[:top] = _window_means(csum, np.clip(r - g - k, 0, n), np.clip(r - g, 0, n))
            r = np.arange(bottom, n)
            after[bottom:] = _window_means(csum, np.clip(r + 1 + g, 0, n), np.clip(r + 1 + g + k, 0, n))
            background = np.maximum(np.maximum(before, after), np.float32(1.0))
            np.maximum(best, smooth / background, out=best)
        return best, lin

    def _band(self, rows: np.ndarray, s0: int, length: float) -> tuple[float, float]:
        """(low, high) column edges of a pulse ``length`` samples long whose power over the
        floor is ``rows`` (its rows x columns from column ``s0``; step 4)."""
        spectrum = rows.mean(axis=0)
        level = 0.5 * float(spectrum.max())
        half = np.flatnonzero(spectrum >= level)
        a, b = int(half[0]), int(half[-1])
        # the -3 dB width, the crossings interpolated between columns
        left = a - (spectrum[a] - level) / (spectrum[a] - spectrum[a - 1]) if a > 0 else a - 0.5
        right = b + (spectrum[b] - level) / (spectrum[b] - spectrum[b + 1]) if b + 1 < len(spectrum) else b + 0.5
        band = 4.0 * self.params.width / length
        # swept: wider than its band and the 1.44 columns a tone spreads over in a Hann
        # window, or its rows' centre moving by a column or more from its first third to its last
        weights = np.clip(rows - 1.0, 0.0, None)
        centres = (weights @ (np.arange(rows.shape[1]) + 0.5)) / np.maximum(weights.sum(axis=1), 1e-12)
        third = max(len(centres) // 3, 1)
        moved = abs(float(np.mean(centres[-third:]) - np.mean(centres[:third])))
        if right - left > max(self.swept_ratio * band, band + 2.0) or (moved >= 1.0 and right - left > band):
            lo, hi = min(left + 0.5, float(centres.min())), max(right + 0.5, float(centres.max()))
            return float(s0 + lo), float(s0 + hi)
        # the centre between bins: a parabola through the log power of the peak bin and its
        # neighbours (a 32-point bin is wider than the band of a pulse over 6 us long)
        k = int(np.argmax(spectrum))
        centre = s0 + k + 0.5 + (peak_offset(spectrum[k - 1:k + 2]) if 0 < k < len(spectrum) - 1 else 0.0)
        return centre - band / 2, centre + band / 2

    def _stands_out_of_its_band(self, power: np.ndarray, ys: slice, x0: float, x1: float) -> bool:
        """Step 5: whether the pulse's band, widened, steps up over the rows around it: its
        power came from nowhere, not from the columns beside it. ``power`` is over each
        column's floor."""
        m = self.step_margin_columns
        c0, c1 = max(int(np.floor(x0)) - m, 0), min(int(np.ceil(x1)) + m, power.shape[1])
        widened = power[:, c0:c1].sum(axis=1, dtype=np.float64) - (c1 - c0)
        g, k = self.gap_rows + 1, self.context_rows  # + the box's row of margin (the window's spread)
        around = np.r_[max(ys.start - g - k, 0):max(ys.start - g, 0), ys.stop + g:min(ys.stop + g + k, len(power))]
        if len(around) == 0:
            return True  # nothing around it to compare with: the contrast alone decides
        before, after = around[around < ys.start], around[around >= ys.stop]

        def level(x):  # the higher mean of the rows before and after
            return max(x[before].mean() if len(before) else -np.inf, x[after].mean() if len(after) else -np.inf)
        peak = ys.start + int(np.argmax(widened[ys]))
        return 10.0 * np.log10(max(widened[peak], 1e-12) / max(level(widened), 1.0)) >= self.min_step_db

    def detect(self, tile: np.ndarray) -> list[PixelBox]:
        tile = np.asarray(tile, np.float32)
        h, w = tile.shape
        max_rows, long_gap = self._rows()
        margin = long_gap + self.context_rows
        if h < 2 * margin + 1 or w == 0:
            return []
        contrast, power = self._contrast(tile, long_gap)
        mask = contrast > np.float32(10 ** (self.min_contrast_db / 10))
        edge = max(1, int(np.ceil(w * self.edge_fraction)))  # the receiver's roll-off at the band edges
        mask[:, :edge] = False
        mask[:, w - edge:] = False
        if not mask.any():  # most tiles: no labelling (a third of the time left per tile)
            return []
        labels, _ = ndi.label(mask, structure=np.ones((3, 3), bool))
        out = []
        for i, (ys, xs) in enumerate(ndi.find_objects(labels), start=1):
            if ys is None or ys.stop - ys.start > max_rows:
                continue
            if ys.start < margin or ys.stop > h - margin:
                continue
            peak_db = float(10.0 * np.log10(max(float(contrast[ys, xs][labels[ys, xs] == i].max()), 1e-12)))
            # the pulse's rows: out from the region while its columns hold a quarter of the
            # peak row's power (its middle may stand less above a background it fills itself)
            lo, hi = max(ys.start - max_rows, 0), min(ys.stop + max_rows, h)
            per_row = np.clip(power[lo:hi, xs] - 1.0, 0.0, None).sum(axis=1)
            peak = float(per_row[ys.start - lo:ys.stop - lo].max())
            a, b = ys.start - lo, ys.stop - lo
            while a > 0 and per_row[a - 1] >= 0.25 * peak:
                a -= 1
            while b < len(per_row) and per_row[b] >= 0.25 * peak:
                b += 1
            if b - a > max_rows:
                continue  # the middle of a longer burst
            rows = per_row[a:b]
            plateau = float(np.median(rows[rows >= 0.5 * rows.max()]))  # the peak row alone is noisy
            length = self.params.hop * float(rows.sum()) / max(plateau, 1e-12)
            ys = slice(lo + a, lo + b)
            near = slice(max(xs.start - 1, 0), min(xs.stop + 1, w))
            x0, x1 = self._band(power[ys, near], near.start, length)
            if not self._stands_out_of_its_band(power, ys, x0, x1):
                continue
            score = db_score(peak_db, SCORE_MIDPOINT_DB)
            out.append(PixelBox(max(x0, 0.0), float(max(ys.start - 1, 0)), min(x1, float(w)), float(min(ys.stop + 1, h)),
                                score, self.label, round(peak_db, 2)))
        return _joined(out)


def load_kernel():
    """The compiled contrast kernel (:data:`KERNEL`), or NativeUnavailable saying why not."""
    return KERNEL.load()


def _kernel_takes(tile: np.ndarray) -> bool:
    """Whether the kernel computes this tile as NumPy would: every pixel finite, under
    KERNEL_MAX_DB, and under KERNEL_MAX_RANGE_DB over the quietest pixel (or over -300 dB, the
    least a column floor can be; silent samples are -300 dB): the kernel sums power over the
    floor in float32, which overflows some 380 dB over it, where NumPy's double sums do not."""
    if tile.size == 0:
        return False  # the kernel refuses it; NumPy's path gives the empty arrays
    lo, hi = np.min(tile), np.max(tile)
    # NaN fails every comparison
    return bool(np.isfinite(lo) and hi < KERNEL_MAX_DB and hi - max(float(lo), -300.0) < KERNEL_MAX_RANGE_DB)


def _floor_blocks(n: int) -> list:
    """The row blocks whose own medians are their columns' floors: FLOOR_ROWS each, a
    shorter remainder joined to the block before it."""
    starts = list(range(0, max(n - FLOOR_ROWS, 0) + 1, FLOOR_ROWS)) or [0]
    return [slice(a, b) for a, b in zip(starts, starts[1:] + [n])]


def _window_means(csum: np.ndarray, start: np.ndarray, stop: np.ndarray) -> np.ndarray:
    """The mean of rows [start, stop) from their cumulative sums ``csum`` (0 where none), as float32."""
    return ((csum[stop] - csum[start]) / np.maximum(stop - start, 1)[:, None]).astype(np.float32)


def _column_medians(x: np.ndarray) -> np.ndarray:
    """``np.median(x, axis=0)``, the same values: a sort down the columns of a tile 32 wide
    takes under half the time of the selection np.median makes along that axis."""
    s = np.sort(x, axis=0)
    n = len(s)
    if n == 0 or np.isnan(s[-1]).any():  # sorted last: np.median's NaN where a column has one
        return np.median(x, axis=0)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / np.float32(2.0)


def _joined(boxes: list) -> list:
    """Boxes that share half the rows of the shorter and overlap in band, or nearly
    (JOIN_GAP_COLUMNS), as one (the higher score's): the regions of one pulse, which grow to
    the same rows. A swept pulse shorter than the window shows as two or more, split where its
    spectrum dips (session 32; before, only boxes at IoU 0.5 were one)."""
    out = sorted(boxes, key=lambda b: (b.y0, b.x0))
    joined = True
    while joined:  # until no two join: a joined box may reach one it did not before
        joined = False
        i = 0
        while i < len(out):
            a, j = out[i], i + 1
            while j < len(out) and out[j].y0 < a.y1:  # sorted by y0: none further shares a row
                b = out[j]
                rows = min(a.y1, b.y1) - max(a.y0, b.y0)
                if rows >= 0.5 * min(a.y1 - a.y0, b.y1 - b.y0) and a.x0 <= b.x1 + JOIN_GAP_COLUMNS \
                        and b.x0 <= a.x1 + JOIN_GAP_COLUMNS:
                    best = a if a.score >= b.score else b
                    a = out[i] = PixelBox(min(a.x0, b.x0), a.y0, max(a.x1, b.x1), max(a.y1, b.y1),
                                          best.score, best.label, best.snr_db)
                    del out[j]
                    joined = True
                else:
                    j += 1
            i += 1
    return out
