#!/usr/bin/env python3
"""Fine-grained labels for issue 11's many-classes case: rewrites every annotation's label in
a folder of SigMF recordings (in place) as FAMILY_d<duration quartile>_ch<centre-frequency
quartile>, the quartiles taken per family over the folder, and prints how many classes and
signals per class that gives.

    .venv/bin/python bench/fine_labels.py DIR

Made for docs/training.md ("The issue's two 30-minute cases again"): 24 recordings of
`synth_dataset(DIR, n=24, seed=131, sample_rate=20e6, duration=0.21, snr_db=(0, 25),
n_signals=10)` give 69 classes, 256 signals, 1 to 12 per class (median 3).
"""
import argparse
import collections
import json
from pathlib import Path

import numpy as np


def relabel(folder: Path) -> collections.Counter:
    metas = sorted(folder.glob("*.sigmf-meta"))
    if not metas:
        raise SystemExit(f"{folder}: no .sigmf-meta files")
    per = collections.defaultdict(lambda: ([], []))
    docs = {m: json.loads(m.read_text()) for m in metas}
    for d in docs.values():
        for a in d.get("annotations", []):
            per[a["core:label"]][0].append(a["core:sample_count"])
            per[a["core:label"]][1].append(a["core:freq_lower_edge"] + a["core:freq_upper_edge"])
    q = {k: (np.quantile(v[0], [0.25, 0.5, 0.75]), np.quantile(v[1], [0.25, 0.5, 0.75])) for k, v in per.items()}
    for m, d in docs.items():
        for a in d.get("annotations", []):
            qd, qf = q[a["core:label"]]
            t = int(np.searchsorted(qd, a["core:sample_count"]))
            f = int(np.searchsorted(qf, a["core:freq_lower_edge"] + a["core:freq_upper_edge"]))
            a["core:label"] = f'{a["core:label"]}_d{t}_ch{f}'
        tmp = m.with_name(m.name + ".tmp")
        tmp.write_text(json.dumps(d, indent=1))
        tmp.replace(m)
    return collections.Counter(a["core:label"] for d in docs.values() for a in d.get("annotations", []))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path)
    counts = relabel(ap.parse_args().folder)
    n = sorted(counts.values())
    print(f"{len(counts)} classes; {sum(n)} signals; per class min {n[0]}, median {n[len(n) // 2]}, max {n[-1]}")


if __name__ == "__main__":
    main()
