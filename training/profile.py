"""Fitting the profile classifier (rfdetect.inference.box_profile) on a prepared dataset.

Each labelled box of the training tiles gives its own features and those of copies with
jittered edges (a detection's box is never the truth's), and a two-layer network is fitted
to them, full batch, with class-balanced weights. It takes seconds on a CPU; the result is
the card's ``profile_classifier`` value.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from gnuradio.rfdetect.formats.sigmf_io import atomic_write_json
from gnuradio.rfdetect.inference import box_profile

from .archs import load_tile
from .progress import progress_bar

HIDDEN = 32
STEPS = 600
LR = 1e-2
WEIGHT_DECAY = 1e-3
JITTER = 0.08        # each edge moves by this fraction of the box's size (normal's sigma) ...
JITTER_PX = 1.5      # ... plus up to this many pixels
COPIES = 16          # jittered copies per box
# `rfdetect-train run` fits no profile classifier when a label has fewer boxes than this: the
# 69-class case of issue 11 (1-12 boxes per class, median 3) is named by memory otherwise
MIN_BOXES = 8


def jittered(box, size, rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` copies of ``box`` (x0, y0, x1, y1) with each edge moved, inside the tile ``size`` (w, h)."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    d = rng.normal(0, JITTER, (n, 4)) * np.array([w, h, w, h]) + rng.uniform(-JITTER_PX, JITTER_PX, (n, 4))
    b = np.array(box, np.float64) + d
    b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0, size[0])
    b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0, size[1])
    b[:, 2] = np.maximum(b[:, 2], b[:, 0] + 1)
    b[:, 3] = np.maximum(b[:, 3], b[:, 1] + 1)
    return b


def examples(ds: dict, images: list, labels: list, seed: int = 0, progress: bool = True):
    """-> (features [M, F], class indices [M]) of the labelled boxes of ``images`` and their
    jittered copies; boxes of labels not in ``labels`` are left out. One tile is in memory at a time."""
    rng = np.random.default_rng(seed)
    index = {lab: i for i, lab in enumerate(labels)}
    to_model = np.array([index.get(lab, -1) for lab in ds["labels"]], np.int64)
    db = ds["params"].db_per_unit
    feats, ys = [], []
    for im in progress_bar(images, progress, desc="profile: features", unit="tile"):
        tile, boxes, tile_labels = load_tile(ds, im)
        size = (tile.shape[1], tile.shape[0])
        for xy, lab in zip(boxes.astype(np.float64), to_model[tile_labels]):
            if lab < 0:
                continue
            group = np.vstack([xy[None], jittered(xy, size, rng, COPIES)])
            feats.append(box_profile.box_features(tile, group, db))
            ys.append(np.full(len(group), lab, np.int64))
    if not feats:
        return np.zeros((0, box_profile.N_FEATURES), np.float32), np.zeros(0, np.int64)
    return np.concatenate(feats), np.concatenate(ys)


def fit(features: np.ndarray, classes: np.ndarray, n_labels: int, seed: int = 0, hidden: int = HIDDEN,
        steps: int = STEPS) -> dict:
    """The card's ``profile_classifier`` fitted to ``features`` [M, F] and ``classes`` [M]."""
    if len(features) == 0:
        raise ValueError("profile classifier: no labelled box to fit it to")
    torch.manual_seed(seed)
    x = torch.as_tensor(features, dtype=torch.float32)
    y = torch.as_tensor(classes, dtype=torch.int64)
    mean = x.mean(0)
    std = x.std(0).clamp_min(1e-3)
    z = (x - mean) / std
    counts = torch.bincount(y, minlength=n_labels).float()
    weight = torch.where(counts > 0, counts.sum() / (counts.clamp_min(1) * (counts > 0).sum()), torch.zeros(()))
    net = torch.nn.Sequential(torch.nn.Linear(z.shape[1], hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, n_labels))
    opt = torch.optim.AdamW(net.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    loss_fn = torch.nn.CrossEntropyLoss(weight=weight)
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn(net(z), y)
        loss.backward()
        opt.step()
    with torch.no_grad():
        acc = float((net(z).argmax(1) == y).float().mean())
    r = lambda t: np.round(t.detach().numpy().astype(np.float64), 6).tolist()  # noqa: E731
    return {"features": box_profile.FEATURES, "weight": 1.0, "fitted": [bool(c > 0) for c in counts.tolist()],
            "mean": r(mean), "std": r(std), "w1": r(net[0].weight.T), "b1": r(net[0].bias),
            "w2": r(net[2].weight.T), "b2": r(net[2].bias),
            "fit": {"boxes": int(len(features) // (COPIES + 1)), "examples": int(len(features)),
                    "train_accuracy": round(acc, 4), "hidden": hidden, "steps": steps, "seed": seed}}


def fit_on_tiles(ds: dict, images: list, labels: list, seed: int = 0, progress: bool = True,
                 min_boxes: int = 0):
    """Features of ``images``' boxes, then :func:`fit`: the card value for a model with ``labels``;
    None (saying why) when a label that has boxes has fewer than ``min_boxes`` of them."""
    x, y = examples(ds, images, labels, seed, progress)
    if len(x) == 0:
        raise ValueError(f"profile classifier: the {len(images)} tiles hold no box of the labels {labels}")
    counts = np.bincount(y, minlength=len(labels)) // (COPIES + 1)
    limit = min_boxes or MIN_BOXES
    few = [f"{labels[i]} ({counts[i]})" for i in np.flatnonzero((counts > 0) & (counts < limit))]
    if few and min_boxes:
        print(f"profile: not fitted: {len(few)} labels have fewer than {min_boxes} boxes in the training tiles "
              f"({', '.join(few[:5])}{', ...' if len(few) > 5 else ''}); a classifier fitted to so few would "
              f"name by memory (`rfdetect-train profile` fits one anyway)")
        return None
    if few:
        print(f"profile: WARNING: {len(few)} labels have fewer than {limit} boxes ({', '.join(few[:5])}"
              f"{', ...' if len(few) > 5 else ''}); its names for them are guesses from a few examples")
    value = fit(x, y, len(labels), seed)
    if progress:
        print(f"profile: fitted on {value['fit']['boxes']} boxes of {len(images)} tiles "
              f"(training accuracy {value['fit']['train_accuracy']:.3f})")
    return value


def training_tiles(ds: dict, tiles: Path, model_dir: Path) -> tuple[list, str]:
    """The tiles to fit on: the run's training tiles when ``tiles`` is the folder ``rfdetect-train
    run`` wrote beside the model (its validation tiles stay unseen), else all of them (a folder
    of the user's own: validation tiles in it are fitted on too)."""
    summary = Path(model_dir) / "work" / "runs" / "train.json"
    if Path(tiles).resolve() == (Path(model_dir) / "work" / "tiles").resolve():
        if not summary.is_file():
            raise ValueError(f"{summary} is missing: without it the run's validation tiles cannot be told from its "
                             f"training tiles (give --tiles a prepared folder of training tiles instead)")
        return list(json.loads(summary.read_text())["train_tiles"]), "the run's training tiles"
    return list(ds["images"]), "all of them, as given"


def add_to_card(card_path: Path, value, command: str | None = None) -> None:
    """Write ``value`` as the card's ``profile_classifier`` (None: remove it), replacing the file whole."""
    card_path = Path(card_path)
    card = json.loads(card_path.read_text())
    if value is None:
        card.pop("profile_classifier", None)
    else:
        fit_info = {**value.get("fit", {}), **({"command": command} if command else {})}
        card["profile_classifier"] = {**value, "fit": fit_info}
    atomic_write_json(card_path, card)
