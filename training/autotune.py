"""auto-tune: training settings from the number of labelled tiles.

The table (docs/training.md), rows by the number of labelled tiles ``n``::

    n < 50          100 epochs, no k-fold, batch 4,  lr 1e-4, early stop 5
    50 <= n < 100    75 epochs, 3 folds,   batch 4,  lr 1e-4, early stop 5
    100 <= n < 200   75 epochs, 5 folds,   batch 8,  lr 3e-4, early stop 7
    200 <= n < 500   50 epochs, 5 folds,   batch 8,  lr 3e-4, early stop 10
    500 <= n < 2000  30 epochs, 7 folds,   batch 16, lr 3e-4, early stop 12
    n >= 2000        20 epochs, 10 folds,  batch 16, lr 3e-4, early stop 15

A row's lower bound belongs to it (100 tiles is the "100-200" row). ``anchor_free`` takes
batch 2 and learning rate 2e-3 in every row (ARCH_SETTINGS).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

# (upper bound exclusive, epochs, k_folds, batch_size, lr, early_stop)
TABLE = (
    (50, 100, 0, 4, 1e-4, 5),
    (100, 75, 3, 4, 1e-4, 5),
    (200, 75, 5, 8, 3e-4, 7),
    (500, 50, 5, 8, 3e-4, 10),
    (2000, 30, 7, 16, 3e-4, 12),
    (None, 20, 10, 16, 3e-4, 15),
)
# anchor_free's own settings, whatever the row: its BatchNorm network from scratch barely
# moves at the table's 1e-4; on 24 recordings with a 30-minute budget, batch 2 at 2e-3
# reached validation AP50 0.80 where batch 4 at 1e-3 reached 0.46 (docs/training.md)
ARCH_SETTINGS = {"anchor_free": {"batch_size": 2, "lr": 2e-3}}
ROW_NAMES = ("< 50", "50-100", "100-200", "200-500", "500-2000", "2000+")

# seconds per tile per epoch (forward + backward), measured on this project's machines
# (docs/training.md); the estimate scales them by tiles, epochs and folds
SECONDS_PER_TILE = {
    ("two_stage", "cpu"): 0.02, ("two_stage", "cuda"): 0.003,
    ("dense", "cpu"): 0.6, ("dense", "cuda"): 0.01,
    ("anchor_free", "cpu"): 0.5, ("anchor_free", "cuda"): 0.01,
    ("faster_rcnn", "cpu"): 12.0, ("faster_rcnn", "cuda"): 0.08,
}


@dataclass
class TuneResult:
    tiles: int
    row: str
    epochs: int
    k_folds: int
    batch_size: int
    lr: float
    early_stop: int
    estimated_s: float = 0.0

    def to_dict(self):
        return asdict(self)


def auto_tune(n_tiles: int, arch: str = "two_stage", device: str = "cpu", overrides: Optional[dict] = None) -> TuneResult:
    if n_tiles < 0:
        raise ValueError("the number of tiles cannot be negative")
    for name, (upper, epochs, folds, batch, lr, stop) in zip(ROW_NAMES, TABLE):
        if upper is None or n_tiles < upper:
            break
    r = TuneResult(n_tiles, name, epochs, folds, batch, lr, stop)
    for k, v in ARCH_SETTINGS.get(arch, {}).items():
        setattr(r, k, v)
    for k, v in (overrides or {}).items():
        if v is not None:
            setattr(r, k, type(getattr(r, k))(v))
    per_tile = SECONDS_PER_TILE.get((arch, "cuda" if device.startswith("cuda") else "cpu"), 1.0)
    # k folds each train on (k-1)/k of the data, then the final model on all of it
    runs = 1.0 + (r.k_folds - 1 if r.k_folds > 1 else 0)
    r.estimated_s = round(per_tile * n_tiles * r.epochs * runs, 1)
    return r


def format_table(r: TuneResult) -> str:
    mins = r.estimated_s / 60
    rows = [("Data size", f"{r.tiles} labelled tiles (row {r.row})"), ("Epochs", r.epochs),
            ("K-folds", r.k_folds or "none"), ("Batch size", r.batch_size), ("Learning rate", f"{r.lr:g}"),
            ("Early stop", f"{r.early_stop} epochs"), ("Estimated time", f"{mins:.1f} min (upper bound; early stop ends sooner)")]
    w = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{w}}  {v}" for k, v in rows)
