"""Progress bars (tqdm) that stay quiet in logs and on other ranks, and the
machine-readable progress log (``rfdetect-train run|train --progress-jsonl FILE``).

The log has one JSON object per line, flushed as it is written, so that another
process (``rfdetect serve``'s job runner) can follow a run with ``tail -f`` semantics:

* ``{"event": "stage", "stage": "prepare"|"train"|"profile"|"evaluate"|"export"|"done", ...}``
* ``{"event": "step", "run": "final", "epoch": 3, "epochs": 40, "step": 12, "steps": 30, "loss": 0.41}``
  (at most about one a second)
* ``{"event": "epoch", "run": "final", "epochs": 40, <the metrics.csv row>}``: ``train_loss``,
  ``val_loss``, ``val_ap50`` (class-agnostic), ``val_map50``, and ``val_precision``,
  ``val_recall``, ``val_f1`` (class-agnostic, at the score threshold of the best F1)

Every line also has ``"time"`` (unix seconds). Only rank 0 writes.
"""
import json
import os
import sys
import time

from tqdm import tqdm


def progress_bar(iterable=None, enable: bool = True, **kw):
    return tqdm(iterable, disable=not enable, file=sys.stderr, dynamic_ncols=True, leave=False, **kw)


_log = None  # the open progress log of this process, if any


def set_progress_log(path) -> None:
    """Append progress lines to ``path`` from now on (None: stop)."""
    global _log
    if _log is not None:
        _log.close()
        _log = None
    if path:
        _log = open(path, "a", buffering=1)


def emit(event: str, **fields) -> None:
    """One line in the progress log (nothing when none is open, or not on rank 0)."""
    if _log is None or os.environ.get("RANK", "0") != "0":
        return
    _log.write(json.dumps({"event": event, "time": round(time.time(), 3), **fields}) + "\n")
