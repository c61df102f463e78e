"""Training augmentations for spectrogram tiles, each switchable (``--augment``).

Every augmentation takes and returns ``(tile [H,W] float32 in [0,1], boxes [N,4]
x0,y0,x1,y1 pixels, labels [N])`` and moves boxes exactly with the pixels
(tests/test_anchor_free.py checks it property by property). Pixel values are the
normalised dB of rfdetect.dsp.spectrogram: ``db_range`` dB span [0, 1].

=============  ===========================================================================
name           what
=============  ===========================================================================
gain           signals louder or quieter by up to +-6 dB (pixels above the noise floor move,
               the floor stays): SNRs the recordings did not have
floor          the whole tile up or down by up to +-2 dB (a floor estimate that is off)
flip           frequency mirrored (a spectrum inverted by the receiver's IQ convention)
roll_f         frequency rolled circularly; a box cut by the wrap becomes two
roll_t         time rolled circularly; a box cut by the wrap becomes two
paste          labelled signals of another tile pasted at random places (overlaps too)
artefacts      a DC spike and up to three spurs (bright single columns): not signals, so
               not boxed; the model learns to leave them alone
zoom           time and frequency each stretched or shrunk by up to 2x (nearest pixel, so
               the noise keeps its texture): durations and bandwidths, sample rates and
               hops the recordings did not have; a shrunk tile is set in noise drawn from
               its own unboxed pixels
=============  ===========================================================================
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np

AUGMENTATIONS = ("zoom", "gain", "floor", "flip", "roll_f", "roll_t", "paste", "artefacts")
DEFAULT_AUGMENTATIONS = AUGMENTATIONS
# each augmentation is applied to a tile with this probability
P_APPLY = 0.5
MIN_BOX = 1.0  # a piece of a box cut by a roll narrower/shorter than this (pixels) is dropped


def parse_augment(text: str) -> tuple:
    """'all', 'none' or a comma-separated subset of AUGMENTATIONS."""
    text = (text or "").strip()
    if text in ("", "all"):
        return DEFAULT_AUGMENTATIONS
    if text == "none":
        return ()
    names = tuple(t.strip() for t in text.split(",") if t.strip())
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown:
        raise ValueError(f"--augment: unknown augmentations {unknown} (known: {', '.join(AUGMENTATIONS)}, "
                         f"all, none)")
    return names


def noise_level(tile: np.ndarray) -> float:
    """The tile's typical noise pixel value (its median: most pixels hold no signal)."""
    return float(np.median(tile))


def gain(tile, boxes, labels, rng, db_range, max_db=6.0):
    n0 = noise_level(tile)
    delta = rng.uniform(-max_db, max_db) / db_range
    # weight 0 at the floor, 1 from 6 dB above it: signals move, noise does not
    w = np.clip((tile - n0) / (6.0 / db_range), 0.0, 1.0)
    out = tile + delta * w
    return np.clip(out, np.minimum(tile, n0), 1.0).astype(np.float32), boxes, labels


def floor(tile, boxes, labels, rng, db_range, max_db=2.0):
    return np.clip(tile + rng.uniform(-max_db, max_db) / db_range, 0.0, 1.0).astype(np.float32), boxes, labels


def flip(tile, boxes, labels, rng=None, db_range=None):
    w = tile.shape[1]
    b = boxes.copy()
    b[:, 0], b[:, 2] = w - boxes[:, 2], w - boxes[:, 0]
    return np.ascontiguousarray(tile[:, ::-1]), b, labels


def _roll(tile, boxes, labels, shift, axis):
    """Roll ``tile`` by ``shift`` pixels along ``axis`` (0: time, 1: frequency)."""
    size = tile.shape[axis]
    lo, hi = (1, 3) if axis == 0 else (0, 2)
    out_b, out_l = [], []
    for b, lab in zip(boxes, labels):
        a0, a1 = b[lo] + shift, b[hi] + shift
        for off in (-size, 0, size):  # the pieces that land inside [0, size)
            p0, p1 = max(0.0, a0 + off), min(float(size), a1 + off)
            if p1 - p0 >= MIN_BOX or (p1 > p0 and p1 - p0 >= b[hi] - b[lo] - 1e-6):
                nb = b.copy()
                nb[lo], nb[hi] = p0, p1
                out_b.append(nb)
                out_l.append(lab)
    nb = np.array(out_b, np.float32).reshape(-1, 4)
    return np.roll(tile, shift, axis=axis), nb, np.array(out_l, np.int64)


def roll_f(tile, boxes, labels, rng, db_range=None):
    return _roll(tile, boxes, labels, int(rng.integers(1, tile.shape[1])), 1)


def roll_t(tile, boxes, labels, rng, db_range=None):
    return _roll(tile, boxes, labels, int(rng.integers(1, tile.shape[0])), 0)


def paste(tile, boxes, labels, rng, db_range, donor=None, max_signals=3):
    """Paste up to ``max_signals`` labelled boxes of ``donor`` (tile, boxes, labels) at
    random places: power adds, and in dB the louder of two pixels nearly is the sum."""
    if donor is None or len(donor[1]) == 0:
        return tile, boxes, labels
    d_tile, d_boxes, d_labels = donor
    h, w = tile.shape
    out = tile.copy()
    new_b, new_l = [boxes], [labels]
    n0_src, n0_dst = noise_level(d_tile), noise_level(tile)
    for k in rng.permutation(len(d_boxes))[:max_signals]:
        x0, y0, x1, y1 = d_boxes[k]
        c0, c1 = int(np.floor(x0)), int(np.ceil(x1))
        r0, r1 = int(np.floor(y0)), int(np.ceil(y1))
        bw, bh = c1 - c0, r1 - r0
        if bw <= 0 or bh <= 0 or bw > w or bh > h:
            continue
        dx, dy = int(rng.integers(0, w - bw + 1)) - c0, int(rng.integers(0, h - bh + 1)) - r0
        patch = d_tile[r0:r1, c0:c1] - n0_src + n0_dst  # the donor's floor moved to this tile's
        region = out[r0 + dy:r1 + dy, c0 + dx:c1 + dx]
        np.maximum(region, patch, out=region)
        new_b.append(np.array([[x0 + dx, y0 + dy, x1 + dx, y1 + dy]], np.float32))
        new_l.append(np.array([d_labels[k]], np.int64))
    return np.clip(out, 0.0, 1.0), np.concatenate(new_b).astype(np.float32), np.concatenate(new_l)


def artefacts(tile, boxes, labels, rng, db_range):
    out = tile.copy()
    n0 = noise_level(tile)
    w = tile.shape[1]
    cols = [w // 2] if rng.random() < 0.7 else []  # the DC bin of an IQ receiver
    cols += list(rng.integers(0, w, int(rng.integers(0, 4))))
    for c in cols:
        level = n0 + rng.uniform(8.0, 35.0) / db_range
        out[:, c] = np.maximum(out[:, c], level)
    return np.clip(out, 0.0, 1.0), boxes, labels


def _zoom_axis(size, lo, hi, rng, max_factor, min_box):
    """A scale factor and offset for one axis; never shrinks a box below ``min_box`` px."""
    smallest = float(np.min(hi - lo)) if len(lo) else np.inf
    low = max(1.0 / max_factor, min(1.0, 2.0 * min_box / smallest) if np.isfinite(smallest) else 0.0)
    s = float(np.exp(rng.uniform(np.log(low), np.log(max_factor))))
    room = size - size * s  # > 0: the shrunk tile fits with room to spare; < 0: a crop of the stretched one
    return s, float(rng.uniform(min(0.0, room), max(0.0, room)))


def zoom(tile, boxes, labels, rng, db_range=None, max_factor=2.0):
    h, w = tile.shape
    sy, oy = _zoom_axis(h, boxes[:, 1], boxes[:, 3], rng, max_factor, MIN_BOX)
    sx, ox = _zoom_axis(w, boxes[:, 0], boxes[:, 2], rng, max_factor, MIN_BOX)
    # output pixel centre -> source pixel (nearest); outside the source: noise
    src_r = np.floor((np.arange(h) + 0.5 - oy) / sy).astype(np.int64)
    src_c = np.floor((np.arange(w) + 0.5 - ox) / sx).astype(np.int64)
    in_r, in_c = (src_r >= 0) & (src_r < h), (src_c >= 0) & (src_c < w)
    out = tile[np.clip(src_r, 0, h - 1)[:, None], np.clip(src_c, 0, w - 1)[None, :]]
    outside = ~(in_r[:, None] & in_c[None, :])
    if outside.any():
        unboxed = np.ones_like(tile, dtype=bool)
        for x0, y0, x1, y1 in boxes:
            unboxed[int(np.floor(y0)):int(np.ceil(y1)), int(np.floor(x0)):int(np.ceil(x1))] = False
        noise = tile[unboxed] if unboxed.any() else np.full(1, noise_level(tile), np.float32)
        out[outside] = rng.choice(noise, int(outside.sum()))
    out_b, out_l = [], []
    for b, lab in zip(boxes, labels):
        x0, x1 = np.clip([b[0] * sx + ox, b[2] * sx + ox], 0.0, w)
        y0, y1 = np.clip([b[1] * sy + oy, b[3] * sy + oy], 0.0, h)
        if x1 - x0 >= MIN_BOX and y1 - y0 >= MIN_BOX:
            out_b.append([x0, y0, x1, y1])
            out_l.append(lab)
    return (out.astype(np.float32), np.array(out_b, np.float32).reshape(-1, 4),
            np.array(out_l, np.int64))


_FUNCS: dict[str, Callable] = {"zoom": zoom, "gain": gain, "floor": floor, "flip": flip, "roll_f": roll_f, "roll_t": roll_t,
                               "artefacts": artefacts}


class Augmenter:
    """Applies each enabled augmentation with probability P_APPLY, in AUGMENTATIONS order.
    ``donor()`` gives another labelled tile for ``paste``."""

    def __init__(self, names, db_range: float, seed: int = 0, donor: Optional[Callable] = None):
        self.names = tuple(names)
        self.db_range = float(db_range)
        self.rng = np.random.default_rng(seed)
        self.donor = donor

    def __call__(self, tile, boxes, labels):
        for name in AUGMENTATIONS:
            if name not in self.names or self.rng.random() >= P_APPLY:
                continue
            if name == "paste":
                if self.donor is not None:
                    tile, boxes, labels = paste(tile, boxes, labels, self.rng, self.db_range, self.donor(self.rng))
            else:
                tile, boxes, labels = _FUNCS[name](tile, boxes, labels, self.rng, self.db_range)
        return np.ascontiguousarray(tile, dtype=np.float32), boxes.astype(np.float32), labels.astype(np.int64)
