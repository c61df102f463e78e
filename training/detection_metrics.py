"""Per-class precision/recall/F1 and the confusion matrix, from matched boxes.

Boxes are record-shaped dicts (t_start/t_stop/f_low/f_high/label), so the same code
scores pixel boxes and physical boxes. Matching is class-agnostic and one-to-one by
IoU (rfdetect.records.match_boxes): a matched pair counts on the confusion matrix at
(truth label, found label) and is a true positive only when the labels agree; an
unmatched truth box is a miss (column "background"), an unmatched found box a false
alarm (row "background").
"""
from __future__ import annotations

import numpy as np

from gnuradio.rfdetect.records import match_boxes


def confusion_and_prf(truth_groups, found_groups, labels, iou: float) -> dict:
    names = list(labels) + ["background"]
    idx = {n: i for i, n in enumerate(names)}
    bg = idx["background"]
    m = np.zeros((len(names), len(names)), dtype=np.int64)
    for truth, found in zip(truth_groups, found_groups):
        t_match, unmatched = match_boxes(truth, found, iou)
        for t, j in zip(truth, t_match):
            m[idx.get(t["label"], bg), bg if j is None else idx.get(found[j]["label"], bg)] += 1
        for j in unmatched:
            m[bg, idx.get(found[j]["label"], bg)] += 1
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
