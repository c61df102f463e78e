"""The model-free energy detector: Otsu threshold + connected regions on one tile.

It is the first stage of the two-stage detector (its regions become the proposals a
classifier labels) and a detector of its own (label ``"signal"``).

Steps, on a tile of normalised rows (see :mod:`rfdetect.dsp.spectrogram`):

1. smooth with a ``smooth`` x ``smooth`` box filter (pooled-by-4 noise pixels vary by
   ~2.2 dB, after a 3x3 mean by ~0.75 dB; unpooled ones by ~5.6 dB, so ``smooth=0``
   picks 3 when at least 4 bins are pooled per column and 5 otherwise);
2. threshold at Otsu's level, clamped to [low, max_snr_db] where ``low`` is the higher
   of ``min_snr_db`` above the noise floor and ``noise_sigmas`` robust standard
   deviations (1.4826 MAD) above the tile's median: the lower clamp keeps pure noise
   from producing regions (Otsu always finds *some* split, and unpooled bins are
   noisier than pooled ones), the upper clamp keeps one strong signal from hiding
   weak ones;
3. close small gaps, label 8-connected regions, drop regions smaller than
   ``min_rows`` x ``min_cols`` pixels;
4. score each region by its mean SNR: ``snr_db`` is the mean power of the region's
   pixels over the floor, and ``score = 1 / (1 + exp(-(snr_db - min_snr_db - 3) / 2))``,
   0.5 at 3 dB above the detection floor and ~0.9 at 7 dB above it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.ndimage as ndi

from ..dsp.spectrogram import SpectrogramParams
from .postprocess import db_score


@dataclass
class PixelBox:
    """A box in tile pixels: rows [y0, y1), columns [x0, x1) (continuous edges)."""

    x0: float
    y0: float
    x1: float
    y1: float
    score: float
    label: str
    snr_db: float | None = None


def otsu_level(values: np.ndarray, bins: int = 256) -> float:
    hist, edges = np.histogram(values, bins=bins, range=(0.0, 1.0))
    hist = hist.astype(np.float64)
    total = hist.sum()
    if total == 0:
        return 1.0
    centers = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = total - w0
    m0 = np.cumsum(hist * centers)
    mt = m0[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mt * w0 / total - m0) ** 2 / (w0 * w1)
    between[~np.isfinite(between)] = 0
    return float(edges[int(np.argmax(between)) + 1])


@dataclass
class EnergyDetector:
    params: SpectrogramParams
    min_snr_db: float = 4.0
    max_snr_db: float = 8.0
    noise_sigmas: float = 5.0
    smooth: int = 0
    min_rows: int = 2
    min_cols: int = 2
    label: str = "signal"
    name: str = "energy"

    def reported_labels(self) -> list:
        return [self.label]

    def __post_init__(self):
        if self.params.normalisation not in ("floor", "running_floor"):
            raise ValueError("the energy detector needs rows normalised to the noise floor "
                             "(normalisation 'floor' or 'running_floor')")

    def regions(self, tile: np.ndarray) -> tuple[np.ndarray, list, np.ndarray]:
        """-> (label image, list of slices, smoothed tile)."""
        tile = np.asarray(tile, dtype=np.float32)
        size = self.smooth or (3 if self.params.pool >= 4 else 5)
        sm = ndi.uniform_filter(tile, size=size, mode="nearest") if size > 1 else tile
        sample = sm.ravel()[::7]  # a subsample estimates the noise spread well enough
        med = float(np.median(sample))
        spread = 1.4826 * float(np.median(np.abs(sample - med)))
        lo = max(self.params.level(self.min_snr_db), med + self.noise_sigmas * spread)
        hi = max(self.params.level(self.max_snr_db), lo)
        level = min(max(otsu_level(sm), lo), hi)
        mask = sm > level
        # pad so that closing does not erode regions touching the tile edge: the
        # Detector must see that they are cut by the edge
        mask = np.pad(mask, 1, mode="edge")
        mask = ndi.binary_closing(mask, structure=np.ones((3, 3), bool))[1:-1, 1:-1]
        labels, n = ndi.label(mask, structure=np.ones((3, 3), bool))
        return labels, ndi.find_objects(labels), sm

    def detect(self, tile: np.ndarray) -> list[PixelBox]:
        labels, slices, _ = self.regions(tile)
        if not slices:
            return []
        idx = np.arange(1, len(slices) + 1)
        # mean linear power over the floor of each region, from the unsmoothed tile
        lin = 10.0 ** (self.params.db_above_floor(tile) / 10.0)
        mean_lin = ndi.mean(lin, labels, idx)
        out = []
        for sl, m in zip(slices, np.atleast_1d(mean_lin)):
            if sl is None:
                continue
            ys, xs = sl
            if ys.stop - ys.start < self.min_rows or xs.stop - xs.start < self.min_cols:
                continue
            snr_db = float(10.0 * np.log10(max(m - 1.0, 1e-6)))  # subtract the noise itself
            score = db_score(snr_db, self.min_snr_db + 3.0)
            out.append(PixelBox(float(xs.start), float(ys.start), float(xs.stop), float(ys.stop),
                                score, self.label, round(snr_db, 2)))
        return out
