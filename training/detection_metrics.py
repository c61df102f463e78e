"""Per-class precision/recall/F1 and the confusion matrix, from matched boxes.

Boxes are record-shaped dicts (t_start/t_stop/f_low/f_high/label), so the same code
scores pixel boxes and physical boxes. Matching is class-agnostic and one-to-one by
IoU (rfdetect.formats.records.match_boxes): a matched pair counts on the confusion matrix at
(truth label, found label) and is a true positive only when the labels agree; an
unmatched truth box is a miss (column "background"), an unmatched found box a false
alarm (row "background"); a box found but not named is in column "unnamed".
"""
from __future__ import annotations

import numpy as np

from gnuradio.rfdetect.formats.records import box_iou, match_boxes


UNNAMED = "unnamed"


def confusion_and_prf(truth_groups, found_groups, labels, iou: float) -> dict:
    """The confusion matrix has a row and a column for each label, then ``unnamed`` (as a
    column: found boxes with no label of the model's, the uncertain-class ``signal``; as a
    row: truth boxes of labels the model does not have), then ``background`` (misses and
    false alarms). A box found but not named is therefore not counted as a miss."""
    names = list(labels) + [UNNAMED, "background"]
    idx = {n: i for i, n in enumerate(names)}
    bg, other = idx["background"], idx[UNNAMED]
    m = np.zeros((len(names), len(names)), dtype=np.int64)
    for truth, found in zip(truth_groups, found_groups):
        t_match, unmatched = match_boxes(truth, found, iou)
        for t, j in zip(truth, t_match):
            m[idx.get(t["label"], other), bg if j is None else idx.get(found[j]["label"], other)] += 1
        for j in unmatched:
            m[bg, idx.get(found[j]["label"], other)] += 1
    per = {}
    for lab in labels:
        i = idx[lab]
        tp = int(m[i, i])
        n_truth = int(m[i, :].sum())
        n_found = int(m[:, i].sum())
        p = tp / n_found if n_found else 0.0
        r = tp / n_truth if n_truth else 0.0
        per[lab] = {"precision": round(p, 4), "recall": round(r, 4),
                    "f1": round(2 * p * r / (p + r), 4) if p + r else 0.0, "truth": n_truth, "found": n_found}
    f1s = [v["f1"] for v in per.values() if v["truth"]]
    return {"per_class": per, "macro_f1": round(float(np.mean(f1s)), 4) if f1s else 0.0,
            "confusion": m.tolist(), "confusion_labels": names}


def _ranked(truth_groups, found_groups, iou: float, label=None):
    """Found boxes best score first, each marked a true positive when it takes the
    best-IoU unmatched truth box of its group (COCO's matching) -> (scores, tp, n_truth).
    ``label`` None: class-agnostic; else only boxes with that label."""
    from gnuradio.rfdetect.formats.records import box_iou
    scored = []  # (score, group, found index)
    n_truth = 0
    groups = []
    for g, (truth, found) in enumerate(zip(truth_groups, found_groups)):
        truth = [t for t in truth if label is None or t["label"] == label]
        found = [f for f in found if label is None or f["label"] == label]
        groups.append((truth, found))
        n_truth += len(truth)
        scored += [(float(f.get("score", 1.0)), g, j) for j, f in enumerate(found)]
    scored.sort(key=lambda s: -s[0])
    used = [set() for _ in groups]
    tp = np.zeros(len(scored))
    for n, (_, g, j) in enumerate(scored):
        truth, found = groups[g]
        best, best_i = iou, None
        for i, t in enumerate(truth):
            if i in used[g]:
                continue
            v = box_iou(t, found[j])
            if v >= best:
                best, best_i = v, i
        if best_i is not None:
            used[g].add(best_i)
            tp[n] = 1
    return np.array([s[0] for s in scored]), tp, n_truth


def average_precision(truth_groups, found_groups, iou: float = 0.5, label=None) -> float:
    """AP at one IoU, COCO's way (101-point interpolated precision/recall curve).
    ``label`` None: class-agnostic (labels ignored); else only boxes with that label.
    Boxes are record-shaped dicts with ``score`` on the found ones. NaN when there is
    no truth box to find (the class is absent: not a zero)."""
    return _ap_of_ranked(*_ranked(truth_groups, found_groups, iou, label))


def _ap_of_ranked(scores, tp, n_truth) -> float:
    """COCO's 101-point AP of found boxes ranked best score first (``tp``: 1 where a box is a
    true positive) against ``n_truth`` boxes to find; NaN when there are none."""
    if n_truth == 0:
        return float("nan")
    if not len(scores):
        return 0.0
    ctp = np.cumsum(tp)
    recall = ctp / n_truth
    precision = ctp / np.arange(1, len(scores) + 1)
    # precision envelope (monotone from the right), sampled at 101 recall points
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    idx = np.searchsorted(recall, np.linspace(0, 1, 101), side="left")
    return float(np.mean([precision[i] if i < len(precision) else 0.0 for i in idx]))


def best_f1_threshold(truth_groups, found_groups, iou: float = 0.5, default: float = 0.5) -> tuple[float, float]:
    """The score threshold that maximises class-agnostic F1 -> (threshold, F1); ``default``
    and 0 when nothing is found or there is nothing to find."""
    scores, tp, n_truth = _ranked(truth_groups, found_groups, iou)
    if n_truth == 0 or not len(scores) or not tp.any():
        return default, 0.0
    ctp = np.cumsum(tp)
    f1 = 2 * ctp / (np.arange(1, len(scores) + 1) + n_truth)
    # cut only where the score changes: boxes tied in score pass or fail together
    last_of_score = np.r_[scores[1:] != scores[:-1], True]
    f1 = np.where(last_of_score, f1, -1.0)
    k = int(np.argmax(f1))
    return float(scores[k]), float(f1[k])


def ap_report(truth_groups, found_groups, labels, iou: float = 0.5) -> dict:
    """Class-agnostic AP, per-class AP and their mean (mAP over classes present)."""
    per = {lab: average_precision(truth_groups, found_groups, iou, lab) for lab in labels}
    present = [v for v in per.values() if not np.isnan(v)]
    agnostic = average_precision(truth_groups, found_groups, iou, None)
    return {"class_agnostic_AP": round(agnostic, 4) if not np.isnan(agnostic) else None,
            "mAP": round(float(np.mean(present)), 4) if present else None,
            "per_class_AP": {k: (round(v, 4) if not np.isnan(v) else None) for k, v in per.items()}}


# SNR bands (dB) for recall by SNR: [lo, hi)
SNR_BANDS = ((-100.0, 0.0), (0.0, 5.0), (5.0, 10.0), (10.0, 15.0), (15.0, 20.0), (20.0, 100.0))


def _agnostic_recall(truth_groups, found_groups, key, iou: float, score_threshold: float) -> dict:
    """Class-agnostic recall of the truth boxes grouped by ``key(truth box)`` (None: left
    out), counting found boxes scoring at least ``score_threshold``."""
    hits: dict[str, list] = {}
    for truth, found in zip(truth_groups, found_groups):
        found = [f for f in found if float(f.get("score", 1.0)) >= score_threshold]
        t_match, _ = match_boxes(truth, found, iou)
        for t, m in zip(truth, t_match):
            k = key(t)
            if k is not None:
                hits.setdefault(k, []).append(m is not None)
    return {k: {"recall": round(float(np.mean(v)), 4), "truth": len(v)} for k, v in hits.items()}


def _in_range(t: dict, lo: float, hi: float) -> bool:
    return t.get("snr_db") is not None and lo <= t["snr_db"] < hi


def _band_name(lo: float, hi: float) -> str:
    return f"{lo:g}-{hi:g} dB" if -100 < lo and hi < 100 else (f"< {hi:g} dB" if lo <= -100 else f">= {lo:g} dB")


def _snr_band(t: dict):
    snr = t.get("snr_db")
    if snr is None:
        return None
    for lo, hi in SNR_BANDS:
        if lo <= snr < hi:
            return _band_name(lo, hi)
    return None


def ap_in_snr_range(truth_groups, found_groups, lo: float, hi: float, iou: float = 0.5):
    """Class-agnostic AP over the truth boxes with ``lo <= snr_db < hi`` (a box without
    ``snr_db`` is in no range). Each found box is about the truth box it overlaps most
    (highest IoU): one whose signal is outside the range is left out, neither hit nor false
    alarm, whether it matches that signal or boxes it badly; a box that overlaps no truth
    box is a false alarm in every range, and one overlapping an in-range and an out-of-range
    box equally counts in both ranges. So an error is charged to the band of the signal it
    was made on, and a band's AP does not charge a detector for another band's signals. This
    follows COCO's size ranges by analogy: COCO leaves out an unmatched box of another size
    by its own area; a box has no SNR of its own, so the signal it overlaps most stands in.
    None where the range holds no truth box. (``iou``: the match threshold within the range.)"""
    v = average_precision(*_band_groups(truth_groups, found_groups, lo, hi), iou, None)
    return None if np.isnan(v) else round(float(v), 4)


def _band_groups(truth_groups, found_groups, lo: float, hi: float) -> tuple[list, list]:
    """The truth boxes with ``lo <= snr_db < hi`` and the found boxes that count in that
    range (:func:`ap_in_snr_range`), per group."""
    tg, fg = [], []
    for truth, found in zip(truth_groups, found_groups):
        keep = [t for t in truth if _in_range(t, lo, hi)]
        other = [t for t in truth if not _in_range(t, lo, hi)]
        out = []
        for f in found:
            o = max((box_iou(t, f) for t in other), default=0.0)
            if o > 0 and o > max((box_iou(t, f) for t in keep), default=0.0):
                continue
            out.append(f)
        tg.append(keep)
        fg.append(out)
    return tg, fg


# resamples of a set's recordings for the spread of an AP (bench/quality.py)
BOOTSTRAP_DRAWS = 1000


def bootstrap_ap(truth_groups, found_groups, lo: float = -np.inf, hi: float = np.inf, iou: float = 0.5,
                 draws: int = BOOTSTRAP_DRAWS, seed: int = 0) -> np.ndarray:
    """Class-agnostic AP over the truth boxes with ``lo <= snr_db < hi`` (any SNR, a box
    without one included, when both are infinite), on ``draws`` resamples of the groups
    (recordings) with replacement: how much the number depends on which recordings a set
    happened to hold. A recording is the unit because its signals share a noise floor,
    artefacts and neighbours. One value per draw, NaN where a draw holds no truth box.
    The draws depend only on ``seed``, ``draws`` and the number of groups, so two
    detectors scored on the same recordings are resampled alike (paired: compare them
    draw by draw)."""
    if np.isinf(lo) and np.isinf(hi):
        tg, fg = list(truth_groups), list(found_groups)
    else:
        tg, fg = _band_groups(truth_groups, found_groups, lo, hi)
    # a box's match depends only on its own group's boxes, so each group is ranked once
    ranked = [_ranked([t], [f], iou) for t, f in zip(tg, fg)]
    n = len(ranked)
    out = np.full(draws, np.nan)
    if n == 0:
        return out
    rng = np.random.default_rng(seed)
    for d in range(draws):
        pick = [ranked[k] for k in rng.integers(0, n, n)]
        scores = np.concatenate([r[0] for r in pick])
        tp = np.concatenate([r[1] for r in pick])
        order = np.argsort(-scores, kind="stable")
        out[d] = _ap_of_ranked(scores[order], tp[order], sum(r[2] for r in pick))
    return out


def snr_band_ranges() -> dict:
    """{band name as :func:`ap_by_snr` names it: (lo, hi) in dB}."""
    return {_band_name(lo, hi): (lo, hi) for lo, hi in SNR_BANDS}


def ap_by_snr(truth_groups, found_groups, iou: float = 0.5) -> dict:
    """Class-agnostic AP per SNR band (:func:`ap_in_snr_range` over SNR_BANDS, named as
    :func:`recall_by_snr` names them): {band: {"AP": ..., "truth": n}}, bands without truth
    left out. Issue 12 asks a model to be at least as good as ``energy`` in every band."""
    out = {}
    for lo, hi in SNR_BANDS:
        n = sum(_in_range(t, lo, hi) for truth in truth_groups for t in truth)
        if n:
            out[_band_name(lo, hi)] = {"AP": ap_in_snr_range(truth_groups, found_groups, lo, hi, iou), "truth": n}
    return out


def recall_by_snr(truth_groups, found_groups, iou: float = 0.5, score_threshold: float = 0.0) -> dict:
    """Class-agnostic recall per SNR band of the truth boxes (their ``snr_db``), counting
    found boxes scoring at least ``score_threshold``. Bands without truth are left out."""
    return _agnostic_recall(truth_groups, found_groups, _snr_band, iou, score_threshold)


def recall_by_label(truth_groups, found_groups, iou: float = 0.5, score_threshold: float = 0.0) -> dict:
    """Class-agnostic recall per truth label: how many signals of each kind were boxed at
    all, whatever the detection was called (``signal`` included). It tells a family the
    detector does not localise (every box missed) from one it localises but does not
    name (per-class recall low, this one high). Labels the model does not have count too."""
    return _agnostic_recall(truth_groups, found_groups, lambda t: t.get("label"), iou, score_threshold)
