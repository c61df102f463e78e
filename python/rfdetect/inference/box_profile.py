"""Naming a box from its time-averaged spectrum: the profile classifier.

The network names a detection from the cells near it, and each cell sees a few rows. Some
classes differ only in what an average over many rows shows: an OFDM burst's unused centre
carrier is a null about 10 dB deep in the mean over its rows, and lost in the noise of one
row, while resource blocks of the same width and length are flat (docs/training.md, "The
class region"). The profile classifier reads, for each box, its column profile (the mean
over its rows, at the tile's resolution around the centre and resampled over the whole band
with a margin), its row profile, and its size and level, and gives class probabilities
from a small two-layer network whose weights live in the card (key ``profile_classifier``;
``rfdetect-train profile`` fits it on a prepared dataset's tiles).

Its probabilities multiply the network's (a product of experts, renormalised, and unless
the card says ``"cap_at_network": false`` no surer than the network's best class), and the
label rule then names the box as usual (postprocess.label_rule); the box keeps the network's
score. This module
holds the features, the card check and the forward pass, used by the Detector and by
training alike, so the two cannot differ.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

FEATURES = "box_profile/1"
N_BAND = 48       # column profile over the box's band and MARGIN of its width each side
N_CENTRE = 13     # columns at the tile's own resolution around the box's centre
N_TIME = 16       # row profile over the box's rows and MARGIN of its height each side
MARGIN = 0.25
N_SCALARS = 4     # log2 width, log2 height, level (median of the column profile), pixel spread
N_FEATURES = N_BAND + N_CENTRE + N_TIME + N_SCALARS
DB_SCALE = 10.0   # dB per feature unit, so that profiles are of order one before standardising


class ProfileError(ValueError):
    pass


def _integral(p: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Integral of the step function ``p`` (cell i spans [i, i+1)) from 0 to ``x``; beyond the
    ends the end cells continue (a box at the tile's edge sees its edge, not zeros)."""
    n = len(p)
    cum = np.concatenate([[0.0], np.cumsum(p, dtype=np.float64)])
    xc = np.clip(x, 0, n)
    i = np.minimum(xc.astype(np.int64), n - 1)
    inside = cum[i] + p[i] * (xc - i)
    return inside + np.where(x < 0, p[0] * x, 0.0) + np.where(x > n, p[-1] * (x - n), 0.0)


def resample(p: np.ndarray, a: float, b: float, n: int) -> np.ndarray:
    """Mean of the step function ``p`` over ``n`` equal bins of [a, b)."""
    edges = np.linspace(a, b, n + 1)
    f = _integral(np.asarray(p, np.float64), edges)
    return (np.diff(f) / np.maximum(np.diff(edges), 1e-9)).astype(np.float32)


def box_features(tile: np.ndarray, boxes: np.ndarray, db_per_unit: float) -> np.ndarray:
    """Features [N, N_FEATURES] of boxes [N,4] (x0, y0, x1, y1 in pixels) on the normalised tile
    [H, W]: profiles in dB relative to the box's median, over DB_SCALE."""
    tile = np.asarray(tile, np.float32)
    h, w = tile.shape
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    out = np.zeros((len(boxes), N_FEATURES), np.float32)
    scale = float(db_per_unit) / DB_SCALE
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        r0, r1 = int(np.clip(np.floor(y0), 0, h - 1)), int(np.clip(np.ceil(y1), 1, h))
        c0, c1 = int(np.clip(np.floor(x0), 0, w - 1)), int(np.clip(np.ceil(x1), 1, w))
        r1, c1 = max(r1, r0 + 1), max(c1, c0 + 1)
        bw, bh = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
        ext_c0 = int(np.clip(np.floor(x0 - MARGIN * bw), 0, w - 1))
        ext_c1 = int(np.clip(np.ceil(x1 + MARGIN * bw), ext_c0 + 1, w))
        ext_r0 = int(np.clip(np.floor(y0 - MARGIN * bh), 0, h - 1))
        ext_r1 = int(np.clip(np.ceil(y1 + MARGIN * bh), ext_r0 + 1, h))
        inside = tile[r0:r1, c0:c1]
        cols = tile[r0:r1, ext_c0:ext_c1].mean(axis=0)          # column profile, extended band
        rows = tile[ext_r0:ext_r1, c0:c1].mean(axis=1)          # row profile, extended rows
        col_med = float(np.median(cols[c0 - ext_c0:c1 - ext_c0]))
        row_med = float(np.median(rows[r0 - ext_r0:r1 - ext_r0]))
        band = resample(cols, x0 - MARGIN * bw - ext_c0, x1 + MARGIN * bw - ext_c0, N_BAND) - col_med
        mid = int(np.floor((x0 + x1) / 2)) - ext_c0
        idx = np.clip(np.arange(mid - N_CENTRE // 2, mid + N_CENTRE // 2 + 1), 0, len(cols) - 1)
        centre = cols[idx] - col_med
        time = resample(rows, y0 - MARGIN * bh - ext_r0, y1 + MARGIN * bh - ext_r0, N_TIME) - row_med
        f = out[k]
        f[:N_BAND] = band * scale
        f[N_BAND:N_BAND + N_CENTRE] = centre * scale
        f[N_BAND + N_CENTRE:N_BAND + N_CENTRE + N_TIME] = time * scale
        f[-4] = np.log2(bw)
        f[-3] = np.log2(bh)
        f[-2] = col_med * scale
        # the spread of at most 32 of its rows: a tall box's pixels cost milliseconds otherwise
        f[-1] = float(inside[::max(1, -(-len(inside) // 32))].std()) * scale
    return out


def check_profile_classifier(d, n_labels: int) -> dict:
    """The card's ``profile_classifier`` as arrays, or ProfileError naming what is wrong."""
    if not isinstance(d, dict):
        raise ProfileError("profile_classifier must be an object")
    if d.get("features") != FEATURES:
        raise ProfileError(f"profile_classifier.features {d.get('features')!r} is not {FEATURES!r}")
    arrays = {}
    for k in ("mean", "std", "w1", "b1", "w2", "b2"):
        if k not in d:
            raise ProfileError(f"profile_classifier lacks {k!r}")
        try:
            arrays[k] = np.asarray(d[k], np.float32)
        except (TypeError, ValueError) as e:
            raise ProfileError(f"profile_classifier.{k} is not a number array ({e})") from None
    try:
        weight = float(d.get("weight", 1.0))
    except (TypeError, ValueError):
        raise ProfileError(f"profile_classifier.weight {d.get('weight')!r} is not a number") from None
    if arrays["b1"].ndim != 1:
        raise ProfileError(f"profile_classifier.b1 has shape {list(arrays['b1'].shape)}, not [hidden units]")
    hidden = arrays["b1"].shape[0]
    want = {"mean": (N_FEATURES,), "std": (N_FEATURES,), "w1": (N_FEATURES, hidden), "b1": (hidden,),
            "w2": (hidden, n_labels), "b2": (n_labels,)}
    for k, shape in want.items():
        if arrays[k].shape != shape:
            raise ProfileError(f"profile_classifier.{k} has shape {list(arrays[k].shape)}, not {list(shape)} "
                               f"({N_FEATURES} features, {n_labels} labels)")
        if not np.all(np.isfinite(arrays[k])):
            raise ProfileError(f"profile_classifier.{k} is not finite")
    if not (arrays["std"] > 0).all():
        raise ProfileError("profile_classifier.std must be positive")
    if not (np.isfinite(weight) and weight >= 0):
        raise ProfileError(f"profile_classifier.weight {weight} must be >= 0")
    arrays["weight"] = weight
    cap = d.get("cap_at_network", True)
    if not isinstance(cap, bool):
        raise ProfileError(f"profile_classifier.cap_at_network {cap!r} must be true or false")
    arrays["cap_at_network"] = cap
    fitted = d.get("fitted", [True] * n_labels)
    if not (isinstance(fitted, list) and len(fitted) == n_labels and all(isinstance(v, bool) for v in fitted)
            and any(fitted)):
        raise ProfileError(f"profile_classifier.fitted {fitted!r} must be a list of {n_labels} true/false "
                           f"values (one for each label), at least one of them true")
    arrays["fitted"] = np.asarray(fitted, bool)
    return arrays


class ProfileClassifier:
    """Class probabilities of boxes from their profiles, and their product with the network's."""

    def __init__(self, card_value: dict, n_labels: int, db_per_unit: float):
        self.p = check_profile_classifier(card_value, n_labels)
        self.value = card_value
        self.db_per_unit = float(db_per_unit)

    @classmethod
    def from_card(cls, extra: dict, n_labels: int, db_per_unit: float) -> Optional["ProfileClassifier"]:
        value = extra.get("profile_classifier")
        return None if value is None else cls(value, n_labels, db_per_unit)

    def logits(self, features: np.ndarray) -> np.ndarray:
        p = self.p
        z = (np.asarray(features, np.float32) - p["mean"]) / p["std"]
        return np.maximum(z @ p["w1"] + p["b1"], 0.0) @ p["w2"] + p["b2"]

    def probs(self, tile: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        z = self.logits(box_features(tile, boxes, self.db_per_unit))
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def combine(self, tile: np.ndarray, boxes: np.ndarray, net_probs: np.ndarray) -> np.ndarray:
        """The network's class probabilities [N,K] times the profile's to the card's weight,
        renormalised, then (``cap_at_network``, the default) scaled so that the best class is
        no surer than the network's best: the profile picks among the classes the network
        finds likely, and a box the network could not name stays unnamed. (Unscaled, names
        where the network had none split the pieces a class-aware NMS Merge stitched by label:
        `wideband` on TorchSig tuning recordings 0.73 -> 0.46 class-agnostic AP50;
        docs/training.md, session 39. Since session 40 one model's pieces are stitched
        whatever their names, and the embedded cards name uncapped.)"""
        net = np.asarray(net_probs, np.float64)
        if len(boxes) == 0 or self.p["weight"] == 0:
            return net.astype(np.float32)
        net = net.reshape(len(boxes), -1)
        profile = self.probs(tile, boxes).astype(np.float64)
        fitted = self.p["fitted"]
        if not fitted.all():
            # a label it saw no box of: the profile has no opinion on it (a uniform share of the
            # fitted labels' probabilities, renormalised to one), so the network alone weighs it
            # against the rest (the corpus fitted on may lack one)
            profile[:, fitted] /= np.maximum(profile[:, fitted].sum(axis=1, keepdims=True), 1e-30)
            profile[:, ~fitted] = 1.0 / fitted.sum()
        prod = net * profile ** self.p["weight"]
        total = prod.sum(axis=1, keepdims=True)
        out = np.where(total > 0, prod / np.maximum(total, 1e-30), net)
        if not self.p["cap_at_network"]:
            return out.astype(np.float32)
        best = out.max(axis=1, keepdims=True)
        cap = np.minimum(1.0, net.max(axis=1, keepdims=True) / np.maximum(best, 1e-30))
        return (out * np.where(best > 0, cap, 1.0)).astype(np.float32)
