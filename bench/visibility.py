#!/usr/bin/env python3
"""How much of each labelled signal a spectrogram shows: per truth label and SNR band, the
contrast between a truth box and the rows around it, at a model's spectrogram.

    nice -n 10 .venv/bin/python bench/visibility.py --model wideband DIR [DIR ...] [--label radar]

For every truth box of the recordings under each DIR (as training sees it: widened to 2 rows x
2 columns of the spectrogram, docs/training.md "prepare"), the mean dB above the floor inside
the box minus the mean over the same columns 4-12 rows before it and 4-12 rows after it. A
label whose contrast stays near 0 dB at every SNR is not in the picture at that grid, and no
model trained on that spectrogram can box it: radar pulses of a few microseconds at fft 2048
(docs/training.md, "Radar pulses are not in the models' spectrograms"). Boxes within 12 rows of
either end of a recording are left out (nothing to compare with), and a burst with another
burst of its band within 12 rows is compared with that burst (a TDMA slot at a coarse grid),
so read it for short events. Prints a table; writes nothing. Use tuning recordings, not
held-out sets, if the answer is to steer a model.
"""
import argparse
import sys
from collections import defaultdict

import numpy as np

from gnuradio.rfdetect.dsp.spectrogram import SpectrogramParams, StreamingSpectrogram
from gnuradio.rfdetect.formats.sigmf_io import SigMFRecording
from gnuradio.rfdetect.apps.detect_flowgraph import card_spectrogram
from gnuradio.rfdetect.inference.model_runtime import BUILTIN_MODELS, builtin_spectrogram
from rfdetect_training.evaluate import truth_records
from rfdetect_training.prepare import find_recordings

NEAR, FAR = 4, 12  # rows: the comparison bands before and after a box
BANDS = ((-100.0, 10.0, "< 10 dB"), (10.0, 15.0, "10-15 dB"), (15.0, 20.0, "15-20 dB"), (20.0, 100.0, ">= 20 dB"))


def model_spectrogram(spec: str) -> SpectrogramParams:
    """The card's spectrogram (a built-in's own grid; the default one for ``energy``); a model that
    cannot be found is an error."""
    if spec.split("?")[0] in BUILTIN_MODELS:
        return builtin_spectrogram(spec.split("?")[0]) or SpectrogramParams()
    p = card_spectrogram(spec)
    if p is None:
        sys.exit(f"visibility: model {spec!r} not found, or its card unreadable")
    return p


def rows_db(rec: SigMFRecording, p: SpectrogramParams) -> np.ndarray:
    """The whole recording's rows, in dB above the floor."""
    stream = StreamingSpectrogram(p)
    try:
        rows = np.concatenate([stream.push(x) for _, x in rec.chunks(1 << 20)])
    finally:
        stream.engine.close()
    return p.db_above_floor(rows)


def box_contrasts(path, p: SpectrogramParams, labels) -> list[tuple[str, float, float]]:
    """(label, SNR dB, contrast dB) of each truth box of one recording that has rows around it."""
    rec = SigMFRecording.open(path)
    fs, fc = rec.sample_rate, rec.center_frequency
    db = rows_db(rec, p)
    out = []
    for b in truth_records(rec, labels=labels, params=p):
        if b.get("snr_db") is None:
            continue
        r0 = int(np.floor(p.sample_to_row(b["t_start"] * fs)))
        r1 = max(r0 + 1, int(np.ceil(p.sample_to_row(b["t_stop"] * fs))))
        c0 = max(0, int(np.floor(p.offset_hz_to_column(b["f_low"] - fc, fs))))
        c1 = min(p.width, max(c0 + 1, int(np.ceil(p.offset_hz_to_column(b["f_high"] - fc, fs)))))
        if r0 < FAR or r1 + FAR > len(db) or c1 <= c0:
            continue
        around = np.concatenate([db[r0 - FAR:r0 - NEAR, c0:c1].ravel(), db[r1 + NEAR:r1 + FAR, c0:c1].ravel()])
        out.append((b["label"], float(b["snr_db"]), float(db[r0:r1, c0:c1].mean() - around.mean())))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="+", metavar="DIR", help="labelled SigMF recordings")
    ap.add_argument("--model", default="default", help="whose spectrogram (its card's; default: default)")
    ap.add_argument("--label", action="append", help="only this truth label (repeatable; default: all)")
    a = ap.parse_args()
    p = model_spectrogram(a.model)
    by = defaultdict(list)
    for folder in a.folders:
        for path in find_recordings(folder):
            for label, snr, contrast in box_contrasts(path, p, a.label):
                band = next(name for lo, hi, name in BANDS if lo <= snr < hi)
                by[(label, band)].append(contrast)
    if not by:
        sys.exit("visibility: no truth box with rows around it in " + ", ".join(a.folders))
    print(f"Contrast of truth boxes at {a.model}'s spectrogram (fft {p.fft_size}, hop {p.hop}, width {p.width}): "
          f"mean dB above the floor inside minus {NEAR}-{FAR} rows before and after, same columns\n")
    print("| label | SNR | boxes | contrast dB, median | 25th-75th percentile |")
    print("|---|---|---|---|---|")
    order = {name: i for i, (_, _, name) in enumerate(BANDS)}
    for (label, band), v in sorted(by.items(), key=lambda kv: (kv[0][0], order[kv[0][1]])):
        q25, q50, q75 = np.percentile(v, [25, 50, 75])
        print(f"| {label} | {band} | {len(v)} | {q50:.1f} | {q25:.1f} to {q75:.1f} |")


if __name__ == "__main__":
    main()
