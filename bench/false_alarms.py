#!/usr/bin/env python3
"""False tracks per minute on noise with receiver artefacts, with and without the
Detector's DC / spur handling (issue 12, item 3).

    nice -n 10 .venv/bin/python bench/false_alarms.py [--model NAME=SPEC ...] [--seeds 10]
        [--duration 2] [--rate 10e6] [--center-freq 915e6] [--artefacts dc,spurs] [--no-write]

For each seed, `rfdetect synth` writes one noise-only recording (no emitters, profile
`mixed`, the given artefacts; their frequencies are in the global metadata
`rfdetect:synth` -> `artefacts`), and the real `rfdetect detect` flowgraph
(detect_flowgraph.run_detect, each model at its card's spectrogram, energy at the default one; default
tiles) runs every model on it three ways:

* no handling: `--keep-dc`, no ignore list: what the detector reports as it is;
* the default: the DC zone only (a user who has not listed the receiver's spurs);
* DC + spurs: the DC zone plus `--ignore-freq` for every listed spur and LO leakage
  (default width), as a user who knows the receiver's spurs would run it.

Every track (a `new` event) is a false track: there is no signal. A track whose band
overlaps the DC frequency (or a listed spur's) +- the DC zone's half width is counted as
"at DC" (or "at a spur"); the rest are noise. Prints a table (median and min-max over seeds) and writes
its section of docs/performance.md.

Models: --model NAME=SPEC, repeatable (SPEC as for `rfdetect detect --model`, e.g.
`--model anchor_free=/path/to/model_dir`; `auto`, and A+B for two models run together, as
`rfdetect detect` runs them); given any, they replace the defaults
`default=default` and `energy=energy`.
"""
import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench_report import med_spread, named_models, stamp, write_section

from gnuradio.rfdetect.apps.detect_flowgraph import DetectOptions, run_detect
from gnuradio.rfdetect.formats.records import read_jsonl
from gnuradio.rfdetect.dsp.spectrogram import SpectrogramParams
from gnuradio.rfdetect.apps.synth import synth_dataset
from gnuradio.rfdetect.inference.tile_detector import DC_HALF_WIDTH_BINS
from gnuradio.rfdetect.inference.model_runtime import COMBINE, resolve_auto_for_recording

DEFAULT_MODELS = ["default=default", "energy=energy"]
# (row label, ignore_dc, list the spurs)
HANDLING = [("none (`--keep-dc`)", False, False), ("DC zone only (the default)", True, False),
            ("DC zone + `--ignore-freq` spurs", True, True)]


def artefact_freqs(meta_path: Path) -> tuple[float, list[float]]:
    """-> (DC frequency, [spur and LO-leakage frequencies]) from the synth metadata."""
    art = json.loads(meta_path.read_text())["global"]["rfdetect:synth"]["artefacts"]
    known = [s["freq_hz"] for s in art.get("spurs", [])]
    if "lo_leak" in art:
        known.append(art["lo_leak"]["freq_hz"])
    return art["dc"]["freq_hz"] if "dc" in art else None, known


def run_one(rec: Path, spec: str, ignore_dc: bool, spurs: list[float], out: Path) -> dict:
    # each model on the spectrogram of its card (energy: the default one); A+B and auto as
    # `rfdetect detect` runs them (auto: wideband+narrowband-zoom+wideband-short at 8-25 MS/s)
    models, _ = resolve_auto_for_recording(spec.split(COMBINE), str(rec))
    opt = DetectOptions(models=models, by_card=True, out=str(out), ignore_dc=ignore_dc, ignore_freqs=tuple(spurs))
    res = run_detect(str(rec), opt)
    news = [r for r in read_jsonl(out) if r["event"] == "new"]
    return {"tracks": news, "ignored": res["stats"].get("detections_ignored", 0),
            "seconds": res["n_samples"] / res["sample_rate"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", default=[], metavar="NAME=SPEC")
    ap.add_argument("--seeds", type=int, default=10, help="recordings, one per seed (default %(default)s)")
    ap.add_argument("--first-seed", type=int, default=100)
    ap.add_argument("--duration", type=float, default=2.0, help="seconds per recording (default %(default)s)")
    ap.add_argument("--rate", type=float, default=10e6)
    ap.add_argument("--center-freq", type=float, default=915e6,
                    help="centre frequency in the metadata (default %(default)g; `auto` picks its models by it)")
    ap.add_argument("--artefacts", default="dc,spurs", help="synth artefacts (default %(default)s)")
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/performance.md alone")
    a = ap.parse_args()
    models = named_models(ap, a.model or DEFAULT_MODELS, {})
    artefacts = tuple(x.strip() for x in a.artefacts.split(",") if x.strip())
    # the classification margin: what the Detector's DC zone takes as "one line" at this rate
    half = DC_HALF_WIDTH_BINS * a.rate / SpectrogramParams().width

    # per (model, handled): per seed (tracks per minute, tracks at an artefact per minute); detections ignored
    per = {(n, h[0]): {"rate": [], "dc": [], "spur": [], "ignored": 0} for n in models for h in HANDLING}
    t_start = time.time()
    with tempfile.TemporaryDirectory(prefix="rfdetect-false-alarms-") as tmp:
        tmp = Path(tmp)
        for seed in range(a.first_seed, a.first_seed + a.seeds):
            rec = synth_dataset(tmp / "rec", n=1, seed=seed, sample_rate=a.rate, duration=a.duration,
                                n_signals=0, profile="mixed", artefacts=artefacts, center_freq=a.center_freq)[0]
            dc, spurs = artefact_freqs(rec)

            def near(track, freqs):
                return any(track["f_low"] - half <= f <= track["f_high"] + half for f in freqs)
            for name, spec in models.items():
                for label, ignore_dc, list_spurs in HANDLING:
                    r = run_one(rec, spec, ignore_dc, spurs if list_spurs else [], tmp / "d.jsonl")
                    per_min = 60.0 / r["seconds"]
                    at_dc = [t for t in r["tracks"] if dc is not None and near(t, [dc])]
                    at_spur = [t for t in r["tracks"] if t not in at_dc and near(t, spurs)]
                    cell = per[(name, label)]
                    cell["rate"].append(len(r["tracks"]) * per_min)
                    cell["dc"].append(len(at_dc) * per_min)
                    cell["spur"].append(len(at_spur) * per_min)
                    cell["ignored"] += r["ignored"]
                    print(f"seed {seed} {name:>12s} {label:<32s}: "
                          f"{len(r['tracks'])} tracks ({len(at_dc)} at DC, {len(at_spur)} at a spur), {r['ignored']} detections "
                          f"ignored", flush=True)
            for p in rec.parent.glob(rec.name.removesuffix(".sigmf-meta") + ".*"):
                p.unlink()  # 160 MB per 2 s at 10 MS/s: one at a time
    rows = ["| model | DC + spur handling | false tracks / min (median) | min-max over seeds | "
            "of which at DC (median) | at a spur (median) | detections ignored (all seeds) |",
            "|---|---|---|---|---|---|---|"]
    for name in models:
        for label, _, _ in HANDLING:
            c = per[(name, label)]
            med, spread = med_spread(c["rate"], "{:.0f}")
            dc_med, spur_med = statistics.median(c["dc"]), statistics.median(c["spur"])
            rows.append(f"| {name} | {label} "
                        f"| {med:.0f} | {spread} | {dc_med:.0f} | {spur_med:.0f} | {c['ignored']} |")
    table = "\n".join(rows)
    spec_text = ", ".join(f"{n}={s}" for n, s in models.items())
    header = stamp(f"{a.seeds} noise-only recordings (`rfdetect synth --signals 0 --profile mixed --artefacts "
                   f"{','.join(artefacts)}`, seeds {a.first_seed}-{a.first_seed + a.seeds - 1}) x {a.duration:g} s "
                   f"at {a.rate / 1e6:g} MS/s ({a.center_freq / 1e6:g} MHz), each model at its card's spectrogram (energy: the default), default tiles, models {spec_text}; "
                   f"{(time.time() - t_start) / 60:.0f} min on the shared 2-core CPU")
    print(header)
    print(table)
    if not a.no_write:
        write_section("performance.md", "bench/false_alarms.py", header, table)
        print("wrote docs/performance.md", file=sys.stderr)


if __name__ == "__main__":
    main()
