"""Spectrogram PNG with detections (and ground truth) drawn as labelled boxes."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from ..formats.records import from_annotation
from ..formats.sigmf_io import SigMFRecording
from ..dsp.spectrogram import SpectrogramParams, StreamingSpectrogram

_MAX_ROWS = 2000  # rows drawn; longer recordings are max-pooled in time for display


def plot_detections(recording, records: list, out_png, params: Optional[SpectrogramParams] = None,
                    title: Optional[str] = None, show_truth: bool = True) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.patches as patches
    import matplotlib.pyplot as plt

    rec = SigMFRecording.open(recording)
    params = params or SpectrogramParams()
    stream = StreamingSpectrogram(params)
    n_rows = rec.n_samples // params.hop
    step = max(1, -(-n_rows // _MAX_ROWS))
    shown = []
    pending = np.empty((0, params.width), np.float32)
    for _, chunk in rec.chunks(1 << 20):
        rows = np.concatenate([pending, stream.push(chunk)])
        k = len(rows) // step * step
        if k:
            shown.append(rows[:k].reshape(-1, step, params.width).max(axis=1))
        pending = rows[k:]
    if len(pending):
        shown.append(pending.max(axis=0, keepdims=True))
    img = np.concatenate(shown) if shown else np.zeros((1, params.width), np.float32)
    fs, fc = rec.sample_rate, rec.center_frequency
    t_end = rec.n_samples / fs
    f0 = (fc + float(params.column_to_offset_hz(0, fs))) / 1e6
    f1 = (fc + float(params.column_to_offset_hz(params.width, fs))) / 1e6

    fig, ax = plt.subplots(figsize=(12, 7), dpi=100)
    ax.imshow(img, aspect="auto", origin="upper", cmap="viridis", extent=(f0, f1, t_end, 0), vmin=0, vmax=1,
              interpolation="nearest")
    labels = sorted({r["label"] for r in records})
    colors = {lab: plt.cm.tab10(i % 10) for i, lab in enumerate(labels)}
    if show_truth:
        for a in rec.annotations:
            if "core:freq_lower_edge" not in a or a.get("core:generator") == "gr-rfdetect":
                continue
            b = from_annotation(a, fs)
            ax.add_patch(patches.Rectangle((b["f_low"] / 1e6, b["t_start"]), (b["f_high"] - b["f_low"]) / 1e6,
                                           b["t_stop"] - b["t_start"], fill=False, ec="white", ls="--", lw=0.8))
    for r in records:
        if r.get("event") == "end":
            continue
        c = colors[r["label"]]
        ax.add_patch(patches.Rectangle((r["f_low"] / 1e6, r["t_start"]), (r["f_high"] - r["f_low"]) / 1e6,
                                       r["t_stop"] - r["t_start"], fill=False, ec=c, lw=1.4))
        tid = r.get("track_id")
        ax.text(r["f_low"] / 1e6, r["t_start"], f"{r['label']} {r['score']:.2f}" + (f" #{tid}" if tid else ""),
                color=c, fontsize=7, va="bottom")
    ax.set_xlabel("frequency (MHz)")
    ax.set_ylabel("time (s)")
    ax.set_title(title or f"{Path(str(rec.meta_path)).name}: {len([r for r in records if r.get('event') != 'end'])} "
                 f"detections (solid), ground truth dashed")
    fig.tight_layout()
    out_png = Path(out_png)
    fig.savefig(out_png)
    plt.close(fig)
    return out_png
