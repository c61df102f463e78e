#!/usr/bin/env python3
"""Detection quality of a live flowgraph: held-out recordings through the IQ Detector in real-time
mode, each paced at its own rate as an SDR delivers it, against the same flowgraph in file mode.

    nice -n 10 .venv/bin/python bench/realtime_quality.py [--set vhf-uhf] [--models auto]
                                                        [--companions auto] [--no-write]

Rows: file mode and real-time mode at --companions, and real-time mode with one network (Companions
False), the baseline, in the same run. --set: a held-out set of bench/quality.py (bench/.cache/heldout/NAME, made by bench/quality.py
--set NAME where missing). The IQ Detector runs --models (``auto`` resolved from the set's first
recording as the block resolves it, Companions as --companions says in each mode), every network
down to the AP floor (``?score=0.05``, as bench/quality.py runs models: AP needs the low-score
tail; P/R/F1 take each model's own threshold). Its records (the Track Assigner's ``new`` and
``update`` events) are scored as ``rfdetect-train evaluate`` scores them: class-agnostic AP50 over
all SNRs and from 10 dB, at the resolution of the first model's grid. Real-time mode drops tiles
when the machine cannot keep up (counted), and lets signals longer than a tile leave in pieces
(the NMS Merge's bounded latency), so its numbers can differ from file mode's even with nothing
dropped; file mode's equal bench/quality.py's for the same models.
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_report import stamp, write_section  # noqa: E402
from quality import HELDOUT, SYNTH_SETS, ensure_synth_set  # noqa: E402

from gnuradio import gr  # noqa: E402
from gnuradio.rfdetect import iq_detector, jsonl_sink, sigmf_source, track_assigner  # noqa: E402
from gnuradio.rfdetect.blocks.iq_detector import with_companions  # noqa: E402
from gnuradio.rfdetect.formats.records import read_jsonl  # noqa: E402
from gnuradio.rfdetect.formats.sigmf_io import SigMFRecording  # noqa: E402
from gnuradio.rfdetect.inference.model_runtime import BUILTIN_MODELS, ModelCard, ModelSpec, model_card_file, \
    resolve_auto  # noqa: E402
from rfdetect_training.detection_metrics import ap_in_snr_range  # noqa: E402
from rfdetect_training.evaluate import MATCH_IOU, at_resolution, load_for_scoring, score_groups, \
    truth_records  # noqa: E402

AP_FLOOR = 0.05


def set_recordings(name: str) -> list[str]:
    if name in SYNTH_SETS:
        cfg = SYNTH_SETS[name]
        return [str(p) for p in ensure_synth_set(name, cfg, cfg["n"])]
    metas = sorted(str(p) for p in (HELDOUT / name).glob("*.sigmf-meta"))
    if not metas:
        raise SystemExit(f"no recordings in {HELDOUT / name}: make them with bench/quality.py --set {name}")
    return metas


def at_floor(models: list) -> list[str]:
    """Each network down to the AP floor; the built-in detectors have no threshold to lower."""
    return [str(m) if ModelSpec.parse(m).model in BUILTIN_MODELS else f"{ModelSpec.parse(m).model}?score={AP_FLOOR}"
            for m in models]


def run(meta: str, models: list, mode: str, out: Path) -> tuple[list, int]:
    """One recording through source -> IQ Detector -> Track Assigner -> JSONL -> (records, tiles dropped)."""
    rec = SigMFRecording.open(meta)
    tb = gr.top_block()
    blk = iq_detector(",".join(models), samp_rate=rec.sample_rate, center_freq=rec.center_frequency,
                      mode=mode, companions=False)
    # the Python blocks must outlive the run: the scheduler calls into them
    tb.keep = (src, tracks, sink) = (sigmf_source(meta, realtime=mode == "realtime"), track_assigner(),
                                      jsonl_sink(str(out)))
    tb.connect(src, blk)
    tb.msg_connect(blk, "detections", tracks, "in")
    tb.msg_connect(tracks, "out", sink, "in")
    tb.run()
    if blk.error:
        raise SystemExit(f"{meta}: {blk.error}")
    found = [r for r in read_jsonl(out) if r.get("event") in ("new", "update")]
    return found, sum(b["tiles_dropped"] for b in blk.stats())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--set", default="vhf-uhf", help="held-out set (bench/quality.py's names)")
    ap.add_argument("--models", default="auto")
    ap.add_argument("--companions", default="auto", help="the IQ Detector's Companions: auto, True or False")
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    metas = set_recordings(a.set)
    first = SigMFRecording.open(metas[0])
    entries = [m.strip() for m in a.models.split(",")]
    rows = ["| mode | Companions | models | AP50 any label | AP50 >= 10 dB | precision | recall | tiles dropped |",
            "|---|---|---|---|---|---|---|---|"]
    # the baseline in the same run: real time with one network (Companions False)
    runs = [("file", a.companions), ("realtime", a.companions)] + \
        ([("realtime", "False")] if a.companions.strip().lower() != "false" else [])
    with tempfile.TemporaryDirectory() as tmp:
        for mode, said in runs:
            run_them, live = with_companions(said, mode)
            chosen = resolve_auto(entries, first.sample_rate, first.center_frequency, companions=run_them,
                                  realtime=live)
            models = at_floor(chosen)
            loaded, labels, at = load_for_scoring(chosen, None, AP_FLOOR)  # each model's own threshold for P/R
            grid = loaded[0][1]["params"]
            truth_all, found_all, dropped = [], [], 0
            for m in metas:
                rec = SigMFRecording.open(m)
                truth_all.append(truth_records(rec, params=grid))
                found, d = run(m, models, mode, Path(tmp) / "records.jsonl")
                found_all.append(at_resolution(found, grid, rec.sample_rate))
                dropped += d
            r = score_groups(truth_all, found_all, labels, at)
            ge10 = ap_in_snr_range(truth_all, found_all, 10.0, math.inf, MATCH_IOU)
            ag = r["class_agnostic"]
            names = "+".join(ModelSpec.parse(m).model for m in models)
            rows.append(f"| {mode} | {said} | {names} | {r['ap50']['class_agnostic_AP']:.3f} | {ge10:.3f} | "
                        f"{ag['precision']:.2f} | {ag['recall']:.2f} | {dropped} |")
            print(rows[-1], flush=True)
    header = stamp(f"held-out `{a.set}` ({len(metas)} recordings, {first.sample_rate / 1e6:g} MS/s) through the IQ "
                   f"Detector, models {a.models}, Companions {a.companions}")
    print(header)
    if not a.no_write:
        write_section("performance.md", f"bench/realtime_quality.py {a.set}", header, "\n".join(rows))


if __name__ == "__main__":
    main()
