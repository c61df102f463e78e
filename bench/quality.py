#!/usr/bin/env python3
"""Detection quality against SNR on a held-out synthetic set.

    .venv/bin/python bench/quality.py [--snrs 0,3,6,9,12,15,20] [--n 2] [--duration 0.5]
                                      [--model NAME=PATH ...] [--no-write]

For each SNR, --n synthetic recordings (10 MS/s, seeds never used for training: the
default model was trained on seeds 2026+) with every signal at that SNR go through
`rfdetect detect` (the real flowgraph, file mode). Each model's detections (track
new/update events: one per merged detection) are matched one-to-one to the ground-truth
annotations at (time x frequency) IoU >= --iou:
  recall (any label)   class-agnostic: was the signal found at all
  recall (right label) the detection also carries the true label (labelled models)
  precision            detections that match some signal (any label)
Models: `default` (two_stage) and `energy` always; add trained models of the other
architectures with --model dense=/path/to/folder --model faster_rcnn=/path/to/folder.
Writes docs/quality_snr.png and its section of docs/performance.md.
"""
import argparse
import tempfile
from pathlib import Path

from gnuradio.rfdetect.detect_flowgraph import DetectOptions, run_detect
from gnuradio.rfdetect.records import from_annotation, match_boxes, read_jsonl
from gnuradio.rfdetect.sigmf_io import SigMFRecording
from gnuradio.rfdetect.synth import synth_dataset

from bench_report import save_plot, stamp, write_section


def score(model: str, recs, work: Path, iou: float):
    n_truth = found = right = n_det = matched = 0
    for i, rec in enumerate(recs):
        out = work / f"{abs(hash(model))}_{i}.jsonl"
        run_detect(str(rec), DetectOptions(models=[model], out=str(out)), handle_signals=False)
        dets = [r for r in read_jsonl(out) if r["event"] in ("new", "update")]
        r = SigMFRecording.open(rec)
        truth = [from_annotation(a, r.sample_rate) for a in r.annotations]
        any_match, unmatched = match_boxes(truth, dets, iou=iou, class_aware=False)
        label_match, _ = match_boxes(truth, dets, iou=iou, class_aware=True)
        n_truth += len(truth)
        found += sum(m is not None for m in any_match)
        right += sum(m is not None for m in label_match)
        n_det += len(dets)
        matched += len(dets) - len(unmatched)
    return {"recall": found / max(n_truth, 1), "recall_label": right / max(n_truth, 1),
            "precision": matched / max(n_det, 1), "signals": n_truth, "detections": n_det}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--snrs", default="0,3,6,9,12,15,20")
    ap.add_argument("--n", type=int, default=2)
    ap.add_argument("--duration", type=float, default=0.5)
    ap.add_argument("--iou", type=float, default=0.3)
    ap.add_argument("--model", action="append", default=[], help="NAME=PATH of another trained model")
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    models = {"two_stage (default)": "default", "energy": "energy"}
    models.update(dict(m.split("=", 1) for m in a.model))
    snrs = [float(s) for s in a.snrs.split(",")]
    results = {name: [] for name in models}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for snr in snrs:
            recs = synth_dataset(work / f"snr{snr:g}", n=a.n, seed=9000 + int(snr * 10), duration=a.duration,
                                 snr_db=(snr, snr), n_signals=10)
            for name, spec in models.items():
                r = score(spec, recs, work, a.iou)
                results[name].append(r)
                print(f"SNR {snr:4.1f} dB  {name:22s} recall {r['recall']:.2f}  right label "
                      f"{r['recall_label']:.2f}  precision {r['precision']:.2f}  ({r['signals']} signals)",
                      flush=True)
    rows = ["| model | " + " | ".join(f"{s:g} dB" for s in snrs) + " |", "|---|" + "---|" * len(snrs)]
    for name in models:
        rows.append(f"| {name}: recall, any label | " + " | ".join(f"{r['recall']:.2f}" for r in results[name]) + " |")
        if name != "energy":
            rows.append(f"| {name}: recall, right label | "
                        + " | ".join(f"{r['recall_label']:.2f}" for r in results[name]) + " |")
        rows.append(f"| {name}: precision | " + " | ".join(f"{r['precision']:.2f}" for r in results[name]) + " |")
    table = "\n".join(rows)
    header = stamp(f"{a.n} recordings x {a.duration:g} s per SNR at 10 MS/s (~{results['energy'][0]['signals']} "
                   f"signals each), IoU >= {a.iou:g}, default spectrogram")
    print(header)
    print(table)
    if not a.no_write:
        def draw(ax):
            for name in models:
                ax.plot(snrs, [r["recall"] for r in results[name]], "o-", label=f"{name}, any label")
                if name != "energy":
                    ax.plot(snrs, [r["recall_label"] for r in results[name]], "s--", label=f"{name}, right label")
            ax.set_xlabel("SNR (dB)")
            ax.set_ylabel("recall")
            ax.set_ylim(0, 1.02)
            ax.legend(fontsize=8)
        save_plot(draw, "quality_snr.png")
        write_section("performance.md", "bench/quality.py", header, table + "\n\n![recall vs SNR](quality_snr.png)")


if __name__ == "__main__":
    main()
