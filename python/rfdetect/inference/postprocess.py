"""What happens around a network, in NumPy, shared by training and the runtime.

A model's card names its output format; the code that turns network outputs into
boxes (and, for the two-stage detector, the crops that go in) lives here once, so the
numbers measured at training time are the numbers the Detector block gets.

Formats:

* ``boxes_scores_labels/1``: the network gives ``boxes`` [N,4] (x0,y0,x1,y1 pixels),
  ``scores`` [N] and ``labels`` [N] (index into the card's labels). Faster R-CNN.
* ``dense_ltrb/1``: static shapes, no NMS inside. ``scores`` [1,K,h,w] (sigmoid
  applied) and ``ltrb`` [1,4,h,w]: for the cell at (i, j), whose centre is pixel
  ((j+0.5)*stride, (i+0.5)*stride), the distances to the box's left, top, right and
  bottom edges in pixels. Decoded and NMS'd here.
* ``anchor_free/1``: static shapes, no NMS inside. ``objectness`` [1,1,h,w] (sigmoid
  applied: how likely a signal is centred in the cell, trained to equal the IoU of its
  box), ``class_probs`` [1,K,h,w] (softmax over the card's labels) and ``boxes``
  [1,4,h,w] (x0,y0,x1,y1 tile pixels). Decoded here with the label rule
  (:func:`label_rule`) and class-agnostic NMS (one signal, one box, whatever its label).
* ``crop_classifier/1``: the energy detector proposes boxes; each becomes a
  ``crop_size`` x ``crop_size`` letterboxed crop (``crops`` [N,1,S,S]) plus its
  geometry (``geometry`` [N,2]: log2 of width and height in pixels / 10); the
  network gives ``probs`` [N,K+1], column 0 being "background".
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

FORMATS = ("boxes_scores_labels/1", "dense_ltrb/1", "crop_classifier/1", "anchor_free/1")
# label index of a signal that is localised but whose class is uncertain (reported with
# the card's unknown_label, "signal" by default)
UNKNOWN_LABEL = -1
DEFAULT_UNKNOWN_LABEL = "signal"
DEFAULT_CLASS_CONFIDENCE = 0.5
# the label rule's score (card key label_rule.score; cards without it were made under the
# default), each with the words written into the card's label_rule.rule
SCORE_RULES = {
    "objectness_x_probability": "a class whose probability >= class_confidence gives its label and score "
                                "objectness x probability; otherwise the label is unknown_label and the "
                                "score the objectness",
    "objectness": "the score is the objectness; the label is the most probable class when its "
                  "probability >= class_confidence, otherwise unknown_label",
}
DEFAULT_SCORE_RULE = "objectness_x_probability"


# the label rule's class region (card key label_rule.class_region): 0 (cards without the key)
# takes a detection's class probabilities from the cell that gave its box; r > 0 averages
# them over the cells in the central r of the box (per axis), weighted by objectness, so
# the cells that see what tells two classes apart (an OFDM burst's DC null at its centre)
# outvote the ones at its edges (docs/training.md, "The class region")
DEFAULT_CLASS_REGION = 0.0


def _number(value) -> float:
    """A card value as a float; NaN for what is no number (a string, None, True, 10 ** 400)."""
    if isinstance(value, bool):
        return float("nan")
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return float("nan")


def _unit_interval(value, key: str) -> float:
    """``value`` as a float if it is in [0, 1], else ValueError naming the card ``key``."""
    v = _number(value)
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"{key} {value!r} is not a number in [0, 1]")
    return v


def check_class_region(region) -> float:
    """``label_rule.class_region`` as a float if it is in [0, 1], else ValueError."""
    return _unit_interval(region, "label_rule.class_region")


def check_score_rule(score_rule: str) -> str:
    """``score_rule`` if it is one of :data:`SCORE_RULES`, else ValueError naming them."""
    if score_rule not in SCORE_RULES:
        raise ValueError(f"label_rule.score {score_rule!r} is not one of {', '.join(SCORE_RULES)}")
    return score_rule


# candidates kept before NMS: bounds its cost on a busy tile. Over it, the cells whose
# objectness is the highest of their 3 x 3 neighbourhood come first (each signal's peak), then
# the rest by objectness: taken by objectness alone, a wide burst's thousands of cells filled
# the budget and the short bursts beside it were never candidates (docs/training.md, session 28)
MAX_CANDIDATES = 2000
CROP_SIZE = 64
# context kept around a proposal in a crop: this fraction of its size on each side, at least CROP_MIN_PAD pixels
CROP_PAD = 0.25
CROP_MIN_PAD = 2.0


def box_iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` [N,4] with every box in ``b`` [M,4] (x0,y0,x1,y1)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def box_iomin_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over the smaller box's area, for every pair of ``a`` [N,4] and ``b`` [M,4]:
    1 when one box lies inside the other, whatever their sizes."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    smaller = np.minimum(area_a[:, None], area_b[None, :])
    return np.where(smaller > 0, ix * iy / np.maximum(smaller, 1e-12), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou: float, max_out: int = 300,
        contained: float = 0.0) -> np.ndarray:
    """Per-class greedy NMS; returns indices kept, best score first. ``contained`` > 0 also
    suppresses a box that lies at least that much inside a better one (intersection over
    its own area), which IoU misses when the two differ much in size."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    labels = np.asarray(labels)
    keep: list[int] = []
    # the boxes still in play, best first: each kept box is compared with these only, so a
    # signal's hundreds of cells cost one comparison each, not one per box kept after them
    left = order
    while len(left) and len(keep) < max_out:
        i, rest = left[0], left[1:]
        keep.append(int(i))
        hit = box_iou_matrix(boxes[i:i + 1], boxes[rest])[0] >= iou
        if contained > 0:
            hit |= box_iomin_matrix(boxes[i:i + 1], boxes[rest])[0] >= contained
        left = rest[~(hit & (labels[rest] == labels[i]))]
    return np.array(keep, dtype=np.int64)


def check_box_vote(iou) -> float:
    """``anchor_free.box_vote`` as a float if it is in [0, 1] (0: off), else ValueError."""
    return _unit_interval(iou, "anchor_free.box_vote")


def vote_boxes(kept: np.ndarray, boxes: np.ndarray, weights: np.ndarray, iou: float) -> np.ndarray:
    """Each of the boxes NMS ``kept`` [N,4] replaced by the ``weights``-weighted mean of the
    candidate ``boxes`` [M,4] whose IoU with it is at least ``iou`` (box voting, as in
    YOLOv5's merge NMS). Every positive cell of a signal predicts a box for it, and the one
    with the highest objectness is often not the best: on the VHF/UHF tuning tiles,
    `narrowband`'s box for an NBFM key-up from the cell with the highest objectness meets it
    at IoU 0.43 (median) where the best cell's meets it at 0.67 (docs/training.md, session
    27). A kept box is its own candidate. Only cells over the decode's score threshold are
    candidates, so fewer vote at a card's threshold than at the AP floor; an ``iou`` under
    the NMS IoU lets boxes that NMS kept apart vote into each other."""
    kept = np.asarray(kept, np.float64).reshape(-1, 4)
    if len(kept) == 0:
        return kept.astype(np.float32)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    w = (box_iou_matrix(kept, boxes) >= iou) * np.asarray(weights, np.float64)[None, :]
    total = w.sum(axis=1, keepdims=True)
    voted = np.where(total > 0, (w @ boxes) / np.where(total > 0, total, 1.0), kept)
    return voted.astype(np.float32)


# boxes must share at least this many rows to be joined: bursts a few rows apart whose
# predicted edges are a row off still stay apart
MERGE_MIN_OVERLAP_ROWS = 2.0


def merge_same_band(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, band_iou: float):
    """Joins boxes that overlap in time and cover nearly the same band (1-D IoU of their
    frequency ranges >= ``band_iou``) into their union, until none are left: one emitter
    cannot send two overlapping bursts in one channel, so such boxes are pieces of one
    signal (a tall signal boxed as stacked fragments). Boxes that only come close in time
    (bursts a few rows apart, sharing fewer than MERGE_MIN_OVERLAP_ROWS) stay apart. The union keeps the better box's score, and its
    label unless that one is UNKNOWN_LABEL. Input and output: best score first."""
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    s, lab = np.asarray(scores, np.float32), np.asarray(labels, np.int64)
    order = np.argsort(-s, kind="stable")
    b, s, lab = b[order].copy(), s[order].copy(), lab[order].copy()
    while len(b) > 1:
        t_overlap = np.minimum(b[:, None, 3], b[None, :, 3]) - np.maximum(b[:, None, 1], b[None, :, 1])
        f_inter = np.minimum(b[:, None, 2], b[None, :, 2]) - np.maximum(b[:, None, 0], b[None, :, 0])
        f_union = np.maximum(b[:, None, 2], b[None, :, 2]) - np.minimum(b[:, None, 0], b[None, :, 0])
        joins = (t_overlap >= MERGE_MIN_OVERLAP_ROWS) & (f_inter > 0) & (f_inter >= band_iou * f_union)
        np.fill_diagonal(joins, False)
        rows = np.flatnonzero(joins.any(axis=1))
        if len(rows) == 0:
            break
        i = rows[0]  # the best box that has pieces: it absorbs them, then the pairs are recomputed
        group = np.concatenate([[i], np.flatnonzero(joins[i])])
        b[i] = [b[group, 0].min(), b[group, 1].min(), b[group, 2].max(), b[group, 3].max()]
        known = lab[group][lab[group] != UNKNOWN_LABEL]
        lab[i] = lab[i] if lab[i] != UNKNOWN_LABEL or len(known) == 0 else known[0]
        keep = np.ones(len(b), dtype=bool)
        keep[group[1:]] = False
        b, s, lab = b[keep], s[keep], lab[keep]
    return b, s, lab


# boxes narrower or shorter than this keep the network's edges that way (rows: unless the
# card's anchor_free.refine_min_rows says otherwise)
REFINE_MIN_SIZE = 8
# a box shorter than REFINE_MIN_SIZE rows is snapped in time when at least this fraction of its
# rows shows the signal: the network boxes a burst of 2-3 rows (a Wi-Fi ACK at 20 MS/s) 5-6
# rows tall, so its burst fills a third to a half of the box (docs/training.md, session 28)
REFINE_SHORT_FILL = 0.2
# and its time edges lie at least this fraction of the way from the floor to its peak: a
# short burst leaks into the row on each side through the STFT's overlapping windows, and at
# the cards' 0.1 those rows count as signal (a 2-row burst snapped 4 rows tall). Mean AP50 on
# the tuning sets, 0.1 / 0.3 / 0.4: wideband 0.568 / 0.571 / 0.571, narrowband 0.438 / 0.453 /
# 0.455 (0.444 at 0.5)
REFINE_SHORT_FRAC = 0.3
# an edge is where the profile falls below the floor plus this many of its noise deviations
# (at least): noise alone then rarely reaches the threshold, so the gap between bursts two
# rows apart stays a gap and an edge does not wander into the noise beside it
REFINE_NOISE_SIGMAS = 3.0
# a strong signal that fills little of its box (a chirp's diagonal line, boxed as wide as a
# search window of noise around it) has no clear mean profile; where the card sets
# anchor_free.refine_peak_db, its edges come from the profile of its brightest pixel instead
# (the max over the box's rows or columns): a pixel that many dB above the floor is signal
# (noise reaches 12-13 dB above the floor once in a whole tile). The threshold is also at
# least ``frac`` of the way to the peak, which on the embedded cards' scale (tiles clipped 50
# dB over the floor) never exceeds 15 dB. Only a box whose peak is PEAK_CONTRAST times that
# above the floor and at least REFINE_MIN_SIZE rows tall (without both, a 6 dB Bluetooth hop of
# 7 rows snapped to its FSK tones' few columns: t-mixed 0.45 -> 0.28); only where the bright
# pixels span PEAK_FILL of the box's extent that way; and only where what the new edges leave
# out is noise, its mean at most PEAK_EMPTY_DB over the floor (a weak wide signal with a strong
# narrow one inside keeps its box, where the floor is noise). As with the mean profile, a snap
# may also widen a box, by up to the search margin. A chirp cut by a tile's edge snaps to the
# part in the tile and NMS Merge joins the parts (a rule keeping such boxes had t-cls20-hi
# 0.975 -> 0.957)
PEAK_CONTRAST = 2.0
PEAK_EMPTY_DB = 1.0
# the peak profile of a chirp holds it in every column or row it crosses, so it needs little
# fill; a strong line only a few columns wide inside a much wider box is not snapped to
PEAK_FILL = 0.05
# trace_lines (_trace_line): the embedded default boxed the middle half to two thirds of most
# chirps it missed at 10 dB and more on the classic tuning sets, a box no profile can grow
# (inside its rows the chirp crosses only its columns); the line of its brightest pixels can.
# The line must hold LINE_FILL of the box's rows, lie within LINE_RESIDUAL columns (median) of
# a straight one, and cross LINE_SPAN of the box's width: a tone or a hop stands upright in its
# box. Beyond the box it is searched LINE_SEARCH columns either side of where it points, plus
# as far as it moves per row (a steep chirp's pixel wanders within the two rows one window
# spans) and its own width (a strong one leaks into the columns beside it); across gaps of
# LINE_GAP rows; and not into a row where more than LINE_MAX_FILL of those columns is bright
# (the line ran into a wide signal), nor one where its run is over LINE_MAX_WIDTH times its
# width or off the line (another line beside it). A box whose pixels lie on a line already
# followed takes that line's box (docs/training.md, session 38)
LINE_FILL = 0.5
LINE_RESIDUAL = 2.0
LINE_SPAN = 0.5
LINE_SEARCH = 2
LINE_GAP = 1
LINE_MAX_FILL = 0.6
LINE_MAX_WIDTH = 2.0


def check_refine_min_rows(rows) -> int:
    """``anchor_free.refine_min_rows`` as an int >= 1, else ValueError naming the key."""
    v = _number(rows)
    if not (math.isfinite(v) and v >= 1 and v == int(v)):
        raise ValueError(f"anchor_free.refine_min_rows {rows!r} is not a whole number of rows >= 1")
    return int(v)


def check_trace_lines(value) -> bool:
    """``anchor_free.trace_lines`` as a bool, else ValueError naming the key."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"anchor_free.trace_lines {value!r} is not true or false")
    return bool(value)


def check_refine_peak_db(db) -> float:
    """``anchor_free.refine_peak_db`` as a float >= 0 (0: off), else ValueError naming the key."""
    v = _number(db)
    if not (math.isfinite(v) and v >= 0):
        raise ValueError(f"anchor_free.refine_peak_db {db!r} is not a number of dB >= 0")
    return v


def _snap_extent(profile: np.ndarray, lo: int, hi: int, floor: float, noise: float, frac: float,
                 min_contrast: float, min_fill: float, max_gap: int, at_start: bool, at_end: bool):
    """The extent [start, stop) of the energy in ``profile`` that the box's [lo, hi)
    holds, or None when the profile does not show it clearly: its peak inside the box
    under ``min_contrast`` above ``floor``, or less than ``min_fill`` of the box above the
    threshold (``frac`` of the way from ``floor`` to the peak, and at least
    REFINE_NOISE_SIGMAS x ``noise`` above ``floor``: a chirp's row profile, a signal at the
    floor). Runs above the threshold touching the box give the extent, joined across gaps
    of up to ``max_gap`` pixels (an OFDM DC notch). A side whose run reaches the end of the
    searched profile (not the tile's edge: ``at_start``/``at_end``) is -1: the energy
    goes on beyond the search, into a neighbour or a signal the box only partly holds."""
    inside = profile[lo:hi]
    if len(inside) == 0:
        return None
    peak = float(inside.max())
    if not peak - floor >= min_contrast:  # NaN too
        return None
    above = profile >= floor + max(frac * (peak - floor), REFINE_NOISE_SIGMAS * noise)
    if above[lo:hi].mean() < min_fill:
        return None
    idx = np.flatnonzero(above)
    breaks = np.flatnonzero(np.diff(idx) > max_gap + 1)
    starts = np.concatenate([[idx[0]], idx[breaks + 1]])
    stops = np.concatenate([idx[breaks], [idx[-1]]]) + 1
    touching = (stops > lo) & (starts < hi)
    if not touching.any():
        return None
    start, stop = int(starts[touching].min()), int(stops[touching].max())
    return (-1 if start == 0 and not at_start else start), (-1 if stop == len(profile) and not at_end else stop)


def _search_window(lo: int, hi: int, n: int, margin: float) -> tuple[int, int]:
    """[lo, hi) grown by ``margin`` of its size (and a pixel) on each side, within [0, n)."""
    m = int(np.ceil(margin * (hi - lo))) + 1
    return max(0, lo - m), min(n, hi + m)


def _snap_axis(profile: np.ndarray, lo: int, hi: int, a0: int, at_end: bool, floor: float, noise: float,
               frac: float, min_contrast: float, min_fill: float, max_gap: int):
    """:func:`_snap_extent` of a profile that starts at pixel ``a0`` -> (start, stop) in
    tile pixels, each None where the network's edge stays; None where the profile does
    not show the signal clearly."""
    got = _snap_extent(profile, lo - a0, hi - a0, floor, noise, frac, min_contrast, min_fill, max_gap,
                       a0 == 0, at_end)
    if got is None:
        return None
    return (got[0] + a0 if got[0] >= 0 else None), (got[1] + a0 if got[1] >= 0 else None)


def _leaves_only_noise(band: np.ndarray, lo: int, hi: int, got, floor: float, empty: float) -> bool:
    """True where the pixels of ``band`` (rows: the box's extent the other way; columns: the
    axis snapped) that the new extent ``got`` leaves out of [lo, hi) average at most
    ``empty`` above ``floor`` (or where it leaves nothing out)."""
    start, stop = got
    cut = [band[:, lo:start]] if start is not None and start > lo else []
    cut += [band[:, stop:hi]] if stop is not None and stop < hi else []
    cut = [c for c in cut if c.size]
    if not cut:
        return True
    return bool(np.nanmean(np.concatenate([c.ravel() for c in cut])) <= floor + empty)


def _snap_peak_axis(t: np.ndarray, lo: int, hi: int, a0: int, a1: int, n: int, floor: float, frac: float,
                    step: float, empty: float, max_gap: int):
    """The snap along the columns of ``t`` (rows: the box's extent the other way; columns
    [``a0``, ``a1``) of ``n`` searched) from the profile of its brightest pixels
    (refine_peak_db), or None where the network's edges stay: no pixel PEAK_CONTRAST x
    ``step`` above ``floor``, bright columns filling under PEAK_FILL of [``lo``, ``hi``),
    none touching it, or what the snap leaves out not noise (:func:`_leaves_only_noise`)."""
    # _snap_extent's level floor + REFINE_NOISE_SIGMAS x noise is the step here
    got = _snap_axis(np.nanmax(t[:, a0:a1], axis=0), lo, hi, a0, a1 == n, floor, step / REFINE_NOISE_SIGMAS,
                     frac, PEAK_CONTRAST * step, PEAK_FILL, max_gap)
    if got is None or not _leaves_only_noise(t, lo, hi, got, floor, empty):
        return None
    return got


def _line_rows(t: np.ndarray, r0: int, r1: int, c0: int, c1: int, level: float):
    """The sloped bright line in the box [r0, r1) x [c0, c1) of ``t`` -> (rows, the column
    of the brightest pixel in each, slope, intercept), in tile pixels (column = intercept +
    slope x row), keeping only the rows whose pixel lies near the line; or None where the
    brightest pixels reaching ``level`` are no sloped line: in under LINE_FILL of the rows
    (or under 3), off a straight line by more than LINE_RESIDUAL columns (median), or
    crossing under LINE_SPAN of the box's width (a tone, a hop)."""
    box = t[r0:r1, c0:c1]
    peak = np.nanmax(box, axis=1)
    rows = np.flatnonzero(peak >= level)
    if len(rows) < LINE_FILL * (r1 - r0) or len(rows) < 3:
        return None
    cols = np.nanargmax(box[rows], axis=1).astype(np.float64)
    slope, icpt = np.polyfit(rows.astype(np.float64), cols, 1)
    off = np.abs(cols - (slope * rows + icpt))
    if np.median(off) > LINE_RESIDUAL or abs(slope) * (r1 - r0) < LINE_SPAN * (c1 - c0):
        return None
    near = off <= LINE_RESIDUAL + abs(slope)  # not a tone or a burst the box also holds
    return rows[near] + r0, cols[near].astype(np.int64) + c0, float(slope), float(icpt + c0 - slope * r0)


def _bright_run(row: np.ndarray, k: int, level: float) -> tuple[int, int]:
    """[lo, hi) of the run of pixels of ``row`` reaching ``level`` that holds pixel ``k``."""
    lo, hi = k, k + 1
    while lo > 0 and row[lo - 1] >= level:
        lo -= 1
    while hi < len(row) and row[hi] >= level:
        hi += 1
    return lo, hi


def _follow_line(t: np.ndarray, runs: list, way: int, level: float, reach: int, width: float) -> list:
    """Rows and [lo, hi) column runs of the bright line through ``runs`` (row, lo, hi) beyond
    its last row that way (+1: down, -1: up), row by row: in each row the run holding the
    pixel reaching ``level`` nearest to where the straight line fitted to the runs so far
    points, within ``reach`` columns of it; across gaps of at most LINE_GAP rows, to the
    tile's edge. It stops at a row where more than LINE_MAX_FILL of those columns reach
    ``level`` (a wide signal the line runs into), or where the run is over LINE_MAX_WIDTH
    times the line's ``width`` or its middle off the line by more than LINE_RESIDUAL and half
    a row's move (another line beside it). The fit takes in each run found, so a slope
    misjudged over a short box does not lose the line far from it."""
    h, w = t.shape
    r_ = np.array([r for r, _, _ in runs], np.float64)
    c_ = np.array([0.5 * (lo + hi - 1) for _, lo, hi in runs], np.float64)
    n, sr, sc, srr, src = len(r_), r_.sum(), c_.sum(), (r_ * r_).sum(), (r_ * c_).sum()
    found = []
    row = int(r_.max()) if way > 0 else int(r_.min())
    r = row
    while True:
        r += way
        den = n * srr - sr * sr
        slope = (n * src - sr * sc) / den if den > 0 else 0.0
        c = int(round((sc - slope * sr) / n + slope * r))
        a0, a1 = max(0, c - reach), min(w, c + reach + 1)
        if not (0 <= r < h) or a1 <= a0:
            break
        seg = t[r, a0:a1]
        bright = seg >= level
        if bright.sum() > LINE_MAX_FILL * (2 * reach + 1):
            break
        if not bright.any():
            if abs(r - (found[-1][0] if found else row)) > LINE_GAP:
                break
            continue
        on = np.flatnonzero(bright)
        lo, hi = _bright_run(seg, int(on[np.argmin(np.abs(on + a0 - c))]), level)
        mid = a0 + 0.5 * (lo + hi - 1)
        if hi - lo > LINE_MAX_WIDTH * width + 1 or abs(mid - c) > LINE_RESIDUAL + 0.5 * abs(slope) + 0.5:
            break
        found.append((r, a0 + lo, a0 + hi))
        n, sr, sc, srr, src = n + 1, sr + r, sc + mid, srr + r * r, src + r * mid
    return found


def _trace_line(t: np.ndarray, r0: int, r1: int, c0: int, c1: int, level: float, traced: list):
    """The box [r0, r1) x [c0, c1) grown to the whole of the sloped line it holds part of
    (a chirp boxed over a stretch of its sweep) -> (x0, y0, x1, y1), or None where the box
    holds no such line (:func:`_line_rows`) or the line ends inside it. ``traced``: the
    lines this tile's boxes have followed so far, (slope, intercept and width of the line
    fitted to all its runs, box); a box whose line pixels lie on one of them takes its box
    instead of following the line again."""
    got = _line_rows(t, r0, r1, c0, c1, level)
    if got is None:
        return None
    rows, cols, slope, icpt = got
    for s, i, width, box in traced:
        if box[1] <= rows[0] and rows[-1] < box[3] and \
                np.median(np.abs(cols - (i + s * rows))) <= LINE_RESIDUAL + 0.5 * width:
            return box if box[1] < r0 or box[3] > r1 else None
    # the line's own width in a row (a strong chirp leaks into the columns beside it) widens
    # the search, so that only a signal wider than the line stops it
    reach = LINE_SEARCH + int(np.ceil(abs(slope)))
    runs = []
    for r, c in zip(rows, cols):
        a0 = max(0, int(c) - reach)
        lo, hi = _bright_run(t[r, a0:int(c) + reach + 1], int(c) - a0, level)
        runs.append((int(r), a0 + lo, a0 + hi))
    width = float(np.median([hi - lo for _, lo, hi in runs]))
    reach += int(width)
    runs += _follow_line(t, runs, -1, level, reach, width) + _follow_line(t, runs, +1, level, reach, width)
    r, lo, hi = np.array(runs, np.int64).T
    box = (float(lo.min()), float(r.min()), float(hi.max()), float(r.max() + 1))
    fit_slope, fit_icpt = (np.polyfit(r.astype(np.float64), 0.5 * (lo + hi - 1), 1) if len(set(r)) > 1
                           else (slope, icpt))
    traced.append((float(fit_slope), float(fit_icpt), width, box))
    return box if box[1] < r0 or box[3] > r1 else None


def refine_edges(tile: np.ndarray, boxes: np.ndarray, frac: float, margin: float = 0.25,
                 min_contrast: float = 0.05, min_fill: float = 0.5, min_size: int = REFINE_MIN_SIZE,
                 min_rows: Optional[int] = None, peak_db: float = 0.0, db_per_unit: float = 1.0,
                 trace: bool = False) -> np.ndarray:
    """Moves each box's edges to where its signal's energy ends in ``tile``: along
    frequency from the column profile (the mean over the box's rows), along time from the
    row profile over its (new) columns, each searched up to ``margin`` of the box's size
    beyond its edges. The threshold lies ``frac`` of the way from the tile's noise floor
    (its median) to the box's peak, and at least REFINE_NOISE_SIGMAS of the profile's
    noise above the floor. An edge moves only where its profile shows the signal clearly
    (:func:`_snap_extent`) and the box spans at least ``min_size`` pixels that way, or in
    time at least ``min_rows`` (default ``min_size``) rows; a box shorter than ``min_size``
    rows then needs only REFINE_SHORT_FILL of its rows to show the signal, and its threshold
    is at least REFINE_SHORT_FRAC of the way to the peak. Gaps in time are never bridged, so
    bursts a few rows apart stay apart. For boxes a network places roughly (a wide OFDM
    burst boxed half again as wide). Where the mean profile shows nothing clear and
    ``peak_db`` > 0 (the card's anchor_free.refine_peak_db), a box at least ``min_size`` rows
    tall takes its edges from the profile of its brightest pixels, ``peak_db`` over the floor
    (``db_per_unit``: dB per unit of tile value; :func:`_snap_peak_axis`): a strong chirp
    boxed too wide. With ``trace`` as well (the card's anchor_free.trace_lines), a box at
    least ``min_size`` rows tall over part of a sloped bright line (pixels ``peak_db`` over
    the floor: a chirp boxed over a stretch of its sweep) grows to the whole line
    (:func:`_trace_line`). Boxes that end up on top of each other are for the caller's NMS
    (:func:`refine_boxes`)."""
    t = np.asarray(tile, np.float32)
    b = np.asarray(boxes, np.float32).reshape(-1, 4).copy()
    if len(b) == 0 or not frac > 0:
        return b
    min_rows = min_size if min_rows is None else check_refine_min_rows(min_rows)
    step, empty = check_refine_peak_db(peak_db), 0.0  # step 0: no peak profiles
    if step > 0:
        if not (math.isfinite(db_per_unit) and db_per_unit > 0):
            raise ValueError(f"db_per_unit {db_per_unit!r} must be a number of dB > 0")
        step, empty = step / db_per_unit, PEAK_EMPTY_DB / db_per_unit
    h, w = t.shape
    traced = []  # the lines followed so far (_trace_line)
    sample = t[::8, ::8]
    floor = float(np.nanmedian(sample))
    sigma = 1.4826 * float(np.nanmedian(np.abs(sample - floor)))  # one pixel's noise, robustly
    if not (np.isfinite(floor) and np.isfinite(sigma)):
        return b
    for n in range(len(b)):
        if not np.all(np.isfinite(b[n])):
            continue
        x0, y0, x1, y1 = (float(v) for v in b[n])
        r0, r1 = max(0, int(np.floor(y0))), min(h, int(np.ceil(y1)))
        c0, c1 = max(0, int(np.floor(x0))), min(w, int(np.ceil(x1)))
        if r1 <= r0 or c1 <= c0:
            continue
        if c1 - c0 >= min_size:
            a0, a1 = _search_window(c0, c1, w, margin)
            got = _snap_axis(np.nanmean(t[r0:r1, a0:a1], axis=0), c0, c1, a0, a1 == w, floor,
                             sigma / np.sqrt(r1 - r0), frac, min_contrast, min_fill, 2)
            if got is None and step > 0 and r1 - r0 >= min_size:
                got = _snap_peak_axis(t[r0:r1], c0, c1, a0, a1, w, floor, frac, step, empty, 2)
            s0, s1 = got or (None, None)
            if s0 is not None:
                c0 = b[n, 0] = s0
            if s1 is not None:
                c1 = b[n, 2] = s1
        if r1 - r0 >= min_rows:
            short = r1 - r0 < min_size
            fill = min(min_fill, REFINE_SHORT_FILL) if short else min_fill
            # no gap is bridged in time: bursts of one emitter 2-3 rows apart stay apart
            a0, a1 = _search_window(r0, r1, h, margin)
            got = _snap_axis(np.nanmean(t[a0:a1, c0:c1], axis=1), r0, r1, a0, a1 == h, floor,
                             sigma / np.sqrt(c1 - c0), max(frac, REFINE_SHORT_FRAC) if short else frac,
                             min_contrast, fill, 0)
            if got is None and step > 0 and not short:
                got = _snap_peak_axis(t[:, c0:c1].T, r0, r1, a0, a1, h, floor, frac, step, empty, 0)
            s0, s1 = got or (None, None)
            if s0 is not None:
                b[n, 1] = s0
            if s1 is not None:
                b[n, 3] = s1
        if trace and step > 0 and c1 - c0 >= 2:
            snap_r0, snap_r1 = max(0, int(np.floor(b[n, 1]))), min(h, int(np.ceil(b[n, 3])))
            if snap_r1 - snap_r0 >= min_size:
                got = _trace_line(t, snap_r0, snap_r1, c0, c1, floor + step, traced)
                if got is not None:
                    b[n] = got
    return b


def refine_boxes(tile: np.ndarray, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, frac: float,
                 nms_iou: float, min_rows: int = REFINE_MIN_SIZE, peak_db: float = 0.0, db_per_unit: float = 1.0,
                 trace: bool = False):
    """:func:`refine_edges` (``min_rows``: the card's anchor_free.refine_min_rows;
    ``peak_db``: its refine_peak_db, with the spectrogram's ``db_per_unit``; ``trace``: its
    trace_lines), then NMS again (two boxes may snap to one signal's edges): the anchor_free
    post-processing step shared by the Detector and training's evaluation. Input and output: (boxes, scores,
    labels), best score first."""
    if not frac > 0 or len(boxes) == 0:
        return boxes, scores, labels
    b = refine_edges(tile, boxes, frac, min_rows=min_rows, peak_db=peak_db, db_per_unit=db_per_unit, trace=trace)
    keep = nms(b, scores, np.zeros(len(b), np.int64), nms_iou)
    return b[keep], np.asarray(scores)[keep], np.asarray(labels)[keep]


# switching splatter (drop_splatter): an emitter that switches on or off in a few samples, or
# jumps in phase, spreads energy over a wide band in the rows where it does. Those rows are
# boxed no taller than this (a 2048-point window spans the edge in 2 rows, and refine_edges
# may leave one more)
SPLATTER_MAX_ROWS = 3
# and the emission that splattered is measured over this many rows on each side of the box
SPLATTER_SIDE_ROWS = 4


def check_splatter_db(db) -> float:
    """``anchor_free.splatter_db`` as a float >= 0 (0: off), else ValueError naming the key."""
    v = _number(db)
    if not (math.isfinite(v) and v >= 0):
        raise ValueError(f"anchor_free.splatter_db {db!r} is not a number of dB >= 0")
    return v


def splatter_mask(tile: np.ndarray, boxes: np.ndarray, splatter_db: float, db_per_unit: float,
                  max_rows: int = SPLATTER_MAX_ROWS, side_rows: int = SPLATTER_SIDE_ROWS) -> np.ndarray:
    """True for each box that is the switching splatter of a stronger emission in its band:
    at most ``max_rows`` rows tall, and in the ``side_rows`` rows beside it something in its
    columns is, in every row, ``splatter_db`` dB or more above the box's median pixel on one
    side, while on the other side no row has anything within ``splatter_db`` dB of it: the
    box is the row where that emission starts or ends. A strong emission on both sides (a
    short burst over a continuing carrier: a BLE packet across a LoRa chirp), even one that
    dips for a row, is not a switch, so such a box stays. Where no row of one side lies in
    the tile the other side decides: the tiles overlap, so a burst at a tile's edge is whole
    in the next tile. ``db_per_unit``: dB per unit of tile value
    (SpectrogramParams.db_per_unit). A box over NaN pixels stays."""
    t = np.asarray(tile, np.float32)
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    out = np.zeros(len(b), dtype=bool)
    if not splatter_db > 0 or len(b) == 0:
        return out
    h, w = t.shape
    step = splatter_db / db_per_unit
    for n, (x0, y0, x1, y1) in enumerate(b):
        if not (np.all(np.isfinite(b[n])) and 0 < y1 - y0 <= max_rows):
            continue
        r0, r1 = max(0, int(np.floor(y0))), min(h, int(np.ceil(y1)))
        c0, c1 = max(0, int(np.floor(x0))), min(w, int(np.ceil(x1)))
        if r1 <= r0 or c1 <= c0:
            continue
        # each side's rows' strongest pixel in the box's columns: a chirp, which moves across
        # columns from row to row, counts in every row it is on
        sides = [t[a:z, c0:c1].max(axis=1) for a, z in ((max(r0 - side_rows, 0), r0), (r1, min(r1 + side_rows, h)))
                 if z > a]
        if not sides:
            continue
        median = float(np.median(t[r0:r1, c0:c1]))
        for k, on in enumerate(sides):
            off = sides[1 - k] if len(sides) == 2 else None
            if float(on.min()) - median >= step and (off is None or float(on.min()) - float(off.max()) >= step):
                out[n] = True
    return out


def drop_splatter(tile: np.ndarray, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                  splatter_db: float, db_per_unit: float):
    """(boxes, scores, labels) without the boxes :func:`splatter_mask` finds: the anchor_free
    post-processing step after :func:`refine_boxes`, shared by the Detector and training's
    evaluation (the card's ``anchor_free.splatter_db``; 0: off)."""
    if not splatter_db > 0 or len(boxes) == 0:
        return boxes, scores, labels
    keep = ~splatter_mask(tile, boxes, splatter_db, db_per_unit)
    return np.asarray(boxes)[keep], np.asarray(scores)[keep], np.asarray(labels)[keep]


def decode_dense(scores: np.ndarray, ltrb: np.ndarray, stride: int, score_threshold: float, nms_iou: float,
                 max_out: int = 300):
    """``dense_ltrb/1`` outputs of one tile -> (boxes [N,4], scores [N], labels [N])."""
    scores = np.asarray(scores, dtype=np.float32)[0]
    ltrb = np.asarray(ltrb, dtype=np.float32)[0]
    k, h, w = scores.shape
    best = scores.max(axis=0)
    label = scores.argmax(axis=0)
    ii, jj = np.nonzero(best >= score_threshold)
    if len(ii) == 0:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
    cx = (jj + 0.5) * stride
    cy = (ii + 0.5) * stride
    d = ltrb[:, ii, jj]
    boxes = np.stack([cx - d[0], cy - d[1], cx + d[2], cy + d[3]], axis=1).astype(np.float32)
    s = best[ii, jj]
    lab = label[ii, jj].astype(np.int64)
    keep = nms(boxes, s, lab, nms_iou, max_out)
    return boxes[keep], s[keep], lab[keep]


def _area_weights(start: float, stop: float, n_out: int, n_in: int) -> np.ndarray:
    """[n_out, n_in] weights averaging the source interval [start, stop) into n_out cells
    (pixels outside the source count as zero)."""
    edges = start + (stop - start) * np.arange(n_out + 1) / n_out
    lo = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(edges[1:, None], lo + 1) - np.maximum(edges[:-1, None], lo), 0, None)
    return (overlap / np.maximum(edges[1:, None] - edges[:-1, None], 1e-9)).astype(np.float32)


def letterbox_crops(tile: np.ndarray, boxes: np.ndarray, size: int = CROP_SIZE, pad: float = CROP_PAD,
                    min_pad: float = CROP_MIN_PAD) -> tuple[np.ndarray, np.ndarray]:
    """Crops of ``tile`` around ``boxes`` -> (crops [N,1,size,size], geometry [N,2]).

    Each box grows by ``pad`` of its size on each side (at least ``min_pad`` pixels)
    for context, is area-resampled so its longer side fills ``size`` with the aspect
    ratio kept, and is centred on a zero background (letterboxing). The geometry
    gives the network the box's true size, which the letterbox hides.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    crops = np.zeros((len(boxes), 1, size, size), dtype=np.float32)
    geom = np.zeros((len(boxes), 2), dtype=np.float32)
    h, w = tile.shape
    for n, (x0, y0, x1, y1) in enumerate(boxes):
        bw, bh = max(x1 - x0, 1e-3), max(y1 - y0, 1e-3)
        px, py = max(pad * bw, min_pad), max(pad * bh, min_pad)
        cx0, cx1, cy0, cy1 = x0 - px, x1 + px, y0 - py, y1 + py
        scale = size / max(cx1 - cx0, cy1 - cy0)
        ow = max(1, int(round((cx1 - cx0) * scale)))
        oh = max(1, int(round((cy1 - cy0) * scale)))
        r0, r1 = max(0, int(np.floor(cy0))), min(h, int(np.ceil(cy1)))
        c0, c1 = max(0, int(np.floor(cx0))), min(w, int(np.ceil(cx1)))
        if r1 > r0 and c1 > c0:
            wy = _area_weights(cy0 - r0, cy1 - r0, oh, r1 - r0)
            wx = _area_weights(cx0 - c0, cx1 - c0, ow, c1 - c0)
            oy, ox = (size - oh) // 2, (size - ow) // 2
            crops[n, 0, oy:oy + oh, ox:ox + ow] = wy @ tile[r0:r1, c0:c1] @ wx.T
        geom[n] = np.log2([bw, bh]) / 10.0
    return crops, geom


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = x - x.max(axis=axis, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


def classify_proposals(probs: np.ndarray, boxes: np.ndarray, score_threshold: float):
    """``crop_classifier/1`` output -> (boxes, scores, labels) without background."""
    probs = np.asarray(probs, dtype=np.float32).reshape(len(boxes), -1)
    cls = probs[:, 1:].argmax(axis=1)
    score = probs[np.arange(len(boxes)), cls + 1]
    keep = (score >= score_threshold) & (score > probs[:, 0])
    return np.asarray(boxes, np.float32).reshape(-1, 4)[keep], score[keep], cls[keep].astype(np.int64)


def label_rule(objectness: np.ndarray, class_probs: np.ndarray, class_confidence: float,
               score_rule: str = DEFAULT_SCORE_RULE):
    """The score and label of a detection from its objectness and class probabilities
    [N] and [N,K]. The label is the most probable class when its probability reaches
    ``class_confidence``, otherwise UNKNOWN_LABEL (the card's unknown_label, "signal"),
    so a signal that is plainly there is never dropped for want of a class.

    ``score_rule`` (:data:`SCORE_RULES`): "objectness_x_probability" (the default) scores a
    named detection objectness x its class probability, so of two boxes on one signal NMS
    prefers an unnamed one to a named one of the same objectness; "objectness" scores by
    objectness alone, so naming never lowers a box's rank. Neither wins on every model and
    set (docs/training.md, "The score rule")."""
    check_score_rule(score_rule)
    objectness = np.asarray(objectness, np.float32).reshape(-1)
    class_probs = np.asarray(class_probs, np.float32).reshape(len(objectness), -1)
    if class_probs.shape[1] == 0:
        return objectness, np.full(len(objectness), UNKNOWN_LABEL, np.int64)
    best = class_probs.argmax(axis=1)
    p = class_probs[np.arange(len(best)), best]
    confident = p >= class_confidence
    labels = np.where(confident, best, UNKNOWN_LABEL).astype(np.int64)
    if score_rule == "objectness":
        return objectness, labels
    return np.where(confident, objectness * p, objectness).astype(np.float32), labels


def _best(cells: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` of ``cells`` (flat indices) with the highest ``values`` (all of them if fewer)."""
    if len(cells) <= n:
        return cells
    if n <= 0:
        return cells[:0]
    return cells[np.argpartition(-values[cells], n - 1)[:n]]


def _local_peaks(a: np.ndarray) -> np.ndarray:
    """Cells of the map ``a`` [h,w] at least as high as their 8 neighbours, and higher than
    those before them in raster order: a flat plateau usually has one peak (its first cell),
    not one per cell. A NaN neighbour counts as lower."""
    p = np.pad(np.where(np.isnan(a), -np.inf, a), 1, constant_values=-np.inf)
    h, w = a.shape

    def at(dy, dx):
        return p[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
    before = np.maximum.reduce([at(-1, -1), at(-1, 0), at(-1, 1), at(0, -1)])
    after = np.maximum.reduce([at(0, 1), at(1, -1), at(1, 0), at(1, 1)])
    return (a > before) & (a >= after)


def _candidates(obj: np.ndarray, score_threshold: float, max_candidates: int) -> np.ndarray:
    """Flat indices of the cells of the objectness map ``obj`` [h,w] that reach the threshold;
    over ``max_candidates`` of them, the local peaks (:func:`_local_peaks`) first (the best of
    them if they are more), then the other cells by objectness. A burst of some 18,000 cells
    over the threshold has more peaks than the budget (a noisy plateau peaks at about one cell
    in nine), and then the peaks compete by objectness as all cells did before."""
    flat = obj.reshape(-1)
    cand = np.flatnonzero(flat >= score_threshold)
    if len(cand) <= max_candidates:
        return cand
    peak = _local_peaks(obj).reshape(-1)[cand]
    first = _best(cand[peak], flat, max_candidates)
    return np.concatenate([first, _best(cand[~peak], flat, max_candidates - len(first))])


def _relabel(objectness, net_probs, boxes, reclassify, class_confidence, score_rule):
    """Labels of ``boxes`` by the label rule over ``reclassify``'s class probabilities. Their
    scores stay the network's: a profile classifier names boxes and never decides which of a
    tile's boxes are kept or how they rank. (Letting it score too cost 0.03 AP50 on TorchSig,
    which a model fitted to five classic classes has never seen; docs/training.md, session 39.)"""
    return label_rule(objectness, reclassify(boxes, net_probs), class_confidence, score_rule)[1]


def decode_anchor_free(objectness: np.ndarray, class_probs: np.ndarray, boxes: np.ndarray, score_threshold: float,
                       nms_iou: float, class_confidence: float = DEFAULT_CLASS_CONFIDENCE,
                       max_candidates: int = MAX_CANDIDATES, max_out: int = 300, contained: float = 0.0,
                       merge_band_iou: float = 0.0, score_rule: str = DEFAULT_SCORE_RULE,
                       class_region: float = DEFAULT_CLASS_REGION, strides: Optional[tuple] = None,
                       box_vote: float = 0.0, reclassify=None):
    """``anchor_free/1`` outputs of one tile -> (boxes [N,4], scores [N], labels [N];
    label UNKNOWN_LABEL where the class is uncertain; scores by ``score_rule``, which the
    threshold and NMS use). ``merge_band_iou`` > 0: after NMS,
    :func:`merge_same_band` joins pieces of one signal.

    ``class_region`` > 0 (needs ``strides``, the cells' (rows, columns) in pixels): NMS
    and the merge rank boxes by objectness, then each kept box is named from
    :func:`box_class_probs` over its central ``class_region``, and scored and thresholded
    by the label rule.

    ``box_vote`` > 0: each box NMS keeps becomes the objectness-weighted mean of the
    candidates that overlap it at that IoU or more (:func:`vote_boxes`).

    ``reclassify`` (boxes [N,4], class probabilities [N,K]) -> class probabilities [N,K]:
    called on the boxes NMS keeps; the label rule names them from what it returns, and
    their scores stay the network's (:func:`_relabel`; the card's profile classifier,
    rfdetect.inference.box_profile)."""
    box_vote = check_box_vote(box_vote)
    if class_region > 0:
        return _decode_by_box_class(objectness, class_probs, boxes, score_threshold, nms_iou, class_confidence,
                                    max_candidates, max_out, contained, merge_band_iou, score_rule,
                                    check_class_region(class_region), strides, box_vote, reclassify)
    obj = np.asarray(objectness, np.float32)[0, 0]
    probs = np.asarray(class_probs, np.float32)[0]
    bx = np.asarray(boxes, np.float32)[0]
    flat = obj.reshape(-1)
    # a detection's score is at most its objectness: cells below the threshold cannot pass
    cand = _candidates(obj, score_threshold, max_candidates)
    if len(cand) == 0:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
    k = probs.shape[0]
    scores, labels = label_rule(flat[cand], probs.reshape(k, -1)[:, cand].T, class_confidence, score_rule)
    b = bx.reshape(4, -1)[:, cand].T
    ok = (scores >= score_threshold) & (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
    b, scores, labels, o = b[ok], scores[ok], labels[ok], flat[cand][ok]
    keep = nms(b, scores, np.zeros(len(b), np.int64), nms_iou, max_out, contained)
    kept = vote_boxes(b[keep], b, o, box_vote) if box_vote > 0 else b[keep]
    scores, labels = scores[keep], labels[keep]
    if reclassify is not None and len(kept):
        cell_probs = probs.reshape(k, -1)[:, cand][:, ok][:, keep].T
        labels = _relabel(o[keep], cell_probs, kept, reclassify, class_confidence, score_rule)
    if merge_band_iou > 0:
        return merge_same_band(kept, scores, labels, merge_band_iou)
    return kept, scores, labels


def box_class_probs(objectness: np.ndarray, class_probs: np.ndarray, boxes: np.ndarray, stride_y: float,
                    stride_x: float, region: float) -> np.ndarray:
    """Class probabilities [N,K] of boxes [N,4] (pixels) from the cell maps objectness
    [h,w] and class_probs [K,h,w]: the objectness-weighted mean over the cells whose
    centres lie in the central ``region`` fraction of the box per axis (the cell holding
    the box centre where none does on an axis)."""
    h, w = objectness.shape
    out = np.zeros((len(boxes), class_probs.shape[0]), np.float32)

    def cells(lo, hi, stride, n):
        margin = (hi - lo) * (1.0 - region) / 2
        first = max(0, int(np.ceil((lo + margin) / stride - 0.5)))
        last = min(n - 1, int(np.floor((hi - margin) / stride - 0.5)))
        if last < first:
            first = last = min(n - 1, max(0, int((lo + hi) / 2 // stride)))
        return slice(first, last + 1)

    for i, (x0, y0, x1, y1) in enumerate(np.asarray(boxes, np.float64).reshape(-1, 4)):
        rows, cols = cells(y0, y1, stride_y, h), cells(x0, x1, stride_x, w)
        weight = objectness[rows, cols].astype(np.float64)
        total = weight.sum()
        if total <= 0:
            weight, total = np.ones_like(weight), float(weight.size)
        out[i] = np.tensordot(class_probs[:, rows, cols], weight, axes=([1, 2], [0, 1])) / total
    return out


def _decode_by_box_class(objectness, class_probs, boxes, score_threshold, nms_iou, class_confidence,
                         max_candidates, max_out, contained, merge_band_iou, score_rule, region, strides,
                         box_vote=0.0, reclassify=None):
    check_score_rule(score_rule)
    if strides is None:
        raise ValueError("label_rule.class_region > 0 needs the cells' strides (the card's anchor_free "
                         "stride_y and stride_x)")
    obj = np.asarray(objectness, np.float32)[0, 0]
    probs = np.asarray(class_probs, np.float32)[0]
    bx = np.asarray(boxes, np.float32)[0]
    flat = obj.reshape(-1)
    empty = np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
    cand = _candidates(obj, score_threshold, max_candidates)
    b = bx.reshape(4, -1)[:, cand].T
    o = flat[cand]
    ok = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
    b, o = b[ok], o[ok]
    if len(b) == 0:
        return empty
    keep = nms(b, o, np.zeros(len(b), np.int64), nms_iou, max_out, contained)
    b, o = (vote_boxes(b[keep], b, o, box_vote) if box_vote > 0 else b[keep]), o[keep]
    if merge_band_iou > 0:
        b, o, _ = merge_same_band(b, o, np.full(len(b), UNKNOWN_LABEL, np.int64), merge_band_iou)
    box_probs = box_class_probs(obj, probs, b, strides[0], strides[1], region)
    scores, labels = label_rule(o, box_probs, class_confidence, score_rule)
    order = np.argsort(-scores, kind="stable")
    order = order[scores[order] >= score_threshold]
    b, scores, labels = b[order], scores[order], labels[order]
    if reclassify is not None and len(b):
        labels = _relabel(o[order], box_probs[order], b, reclassify, class_confidence, score_rule)
    return b, scores, labels


def peak_offset(three: np.ndarray) -> float:
    """Where a line's peak lies between bins, in bins from the middle one of ``three`` (its
    power in the peak bin and the two beside it: over the floor for ``pulse``, over the noise
    for ``carrier``), within +-0.5: a parabola through their log power; where a neighbour holds
    none (``carrier``: a line between two bins fills both and leaves the third at the noise),
    their centroid. The two differ for the same bins (1e-6, 1, 0.5 -> 0.45; 0, 1, 0.5 -> 0.33):
    the centroid is for a third bin that is empty, not merely weak."""
    three = np.asarray(three, np.float64)
    if three.min() > 0:
        below, peak, above = np.log(three)
        curve = below - 2 * peak + above
        return float(np.clip(0.5 * (below - above) / curve, -0.5, 0.5)) if curve < 0 else 0.0
    weights = np.clip(three, 0.0, None)
    return float(np.clip((weights[2] - weights[0]) / max(float(weights.sum()), 1e-12), -0.5, 0.5))


def db_score(db: float, midpoint_db: float) -> float:
    """The score of the model-free detectors (energy, pulse, carrier) for a level of ``db``:
    a logistic in dB, 0.5 at ``midpoint_db`` and 0.88 four dB above it."""
    return float(1.0 / (1.0 + np.exp(-(db - midpoint_db) / 2.0)))
