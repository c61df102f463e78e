#!/usr/bin/env python3
"""Detection quality of every model, side by side, on held-out recordings.

    nice -n 10 .venv/bin/python bench/quality.py [--model NAME=SPEC ...] [--no-default-models]
                                                 [--set NAME[=DIR] ...] [--quick] [--n N]
                                                 [--score-threshold S] [--no-write] [--out DIR]

Each model runs over each held-out set through the Detector's own tile path and NMS Merge
(training/evaluate.py: detect_groups, score_groups: the code of
`rfdetect-train evaluate --model SPEC --recordings DIR`) and is scored in seconds x Hz at
IoU >= 0.5:

  AP50 any label   class-agnostic AP50 (COCO 101-point), every detection down to the AP floor
  AP50 >= 10 dB    the same over the signals of 10 dB and more; a detection is about the
                   signal it overlaps most (IoU), and one about a weaker signal, matched or
                   not, counts neither way (by analogy with COCO's size ranges)
  (lo-hi)          after an AP50: the 5th and 95th percentiles of it over 1000 resamples
                   (BOOTSTRAP_DRAWS) of the set's recordings with replacement: how far it
                   could move with other recordings of the same settings (a band of 20
                   signals moves a lot; none for a set of one recording)
  below `energy`   the SNR bands where a model's AP50 is under `energy`'s, each with the
                   share of those resamples (the same recordings for both) in which it is
  mAP50            mean per-class AP50 over the model's classes present in the set, shown only
                   where the labels apply (most truth boxes carry one of the model's labels);
                   the per-class AP50 table follows, then recall (any label) per truth label
  P / R / F1       class-agnostic, at the model's own score threshold (the card's; 0 for
                   `energy`, as the Detector runs it), one-to-one matching
  recall by SNR    class-agnostic, at that threshold, per band of each annotation's
                   `rfdetect:snr_db` (in-band SNR)
  ms / tile        the median time of the model's detect() per tile during the run (what the
                   Detector's statistics call latency_ms_p50: same measurement, same place),
                   on a shared 2-core machine; bench/models.py times models alone

Models (--model NAME=SPEC, repeatable, added to `default` and `energy` unless
--no-default-models): anything the Detector loads: `default`, `energy`, a model folder, a
.onnx/.pt file with its card, optionally with `?backend=...` options. Models with a card run
at the card's spectrogram and tile height; `energy` and `default` at the default spectrogram
(fft 4096, hop 2048, width 1024), 1024-row tiles; overlap 128 rows for all.
SPEC `A+B` runs A and B together as `rfdetect detect --model A --model B` does (a Detector
per spectrogram, one NMS Merge): each model reports only what reaches its card's threshold
(so its AP has no tail below them), P/R/F1 count everything reported, the truth is at A's
spectrogram, and ms / tile is the sum of the models' medians.

Held-out sets (--set NAME=DIR for any folder of labelled SigMF; --set NAME for one of the
defaults below; default: all of them). Synthetic sets are generated here on first use into
bench/.cache/heldout/NAME/ (deterministic per seed and index, then cached) with seeds
(7001-7599) and settings no training recipe of this project uses:

  torchsig      TorchSig 2.2.0, 300 x 0.21 s at 10 MS/s (docs/heldout.md; made by
                bench/torchsig_sigmf.py in its own venv, not here): class-agnostic only
  classic-20M   rfdetect synth classic, 20 MS/s x 0.21 s, 7 emitters, 0-25 dB, seed 7001
  classic-10M   rfdetect synth classic, 10 MS/s x 0.42 s, 7 emitters, 0-25 dB, seed 7101
  mixed, ism-2g4, cellular
                realistic profiles, 20 MS/s x 0.21 s, 12 emitters, 0-25 dB, artefacts drawn
                at random, seeds 7201 / 7301 / 7401
  vhf-uhf       realistic profile at 2 MS/s x 1.05 s (narrow channels), seed 7501
  vhf-uhf-4M    the same at 4 MS/s x 0.55 s, 162 MHz, seed 7511 (not in the default list: made
                for the IQ Detector's real-time companions, bench/realtime_quality.py)
  vhf-uhf-6M    likewise at 6.4 MS/s x 0.55 s, 162 MHz, seed 7521 (session 49; not in the default list)

--quick: 2 recordings per set (a smoke run). Writes one table per set, a per-class table,
docs/quality_<set>.png (recall vs SNR, one line per model) and its section of
docs/performance.md (unless --no-write); every (model, set) report.json/report.md (the
format of rfdetect-train evaluate) and all numbers in bench/.cache/quality/ (--out: elsewhere).
"""
from __future__ import annotations

import argparse
import json
import math
import re
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_report import ROOT, git_commit, named_models, save_plot, stamp, write_section  # noqa: E402
from gnuradio.rfdetect.inference.model_runtime import COMBINE  # noqa: E402  (--model NAME=A+B)
from rfdetect_training.detection_metrics import BOOTSTRAP_DRAWS  # noqa: E402

HELDOUT = ROOT / "bench" / ".cache" / "heldout"
RESULTS = ROOT / "bench" / ".cache" / "quality"
OVERLAP = 128
AP_FLOOR = 0.05  # rfdetect-train evaluate's --ap-floor
# synthetic held-out sets: seeds 7001-7599 are used by no training recipe of this project
SYNTH_SETS = {
    "classic-20M": dict(profile="classic", seed=7001, sample_rate=20e6, duration=0.21, n_signals=7, n=16,
                        center_freq=915e6),
    "classic-10M": dict(profile="classic", seed=7101, sample_rate=10e6, duration=0.42, n_signals=7, n=16,
                        center_freq=915e6),
    "mixed": dict(profile="mixed", seed=7201, sample_rate=20e6, duration=0.21, n_signals=12, n=12,
                  center_freq=915e6),
    "ism-2g4": dict(profile="ism-2g4", seed=7301, sample_rate=20e6, duration=0.21, n_signals=12, n=12,
                    center_freq=2.44e9),
    "cellular": dict(profile="cellular", seed=7401, sample_rate=20e6, duration=0.21, n_signals=12, n=12,
                     center_freq=1.85e9),
    "vhf-uhf": dict(profile="vhf-uhf", seed=7501, sample_rate=2e6, duration=1.05, n_signals=12, n=12,
                    center_freq=450e6),
    # not a default set: for the companions the IQ Detector runs in real time above 2.8 MS/s
    # (bench/realtime_quality.py --set vhf-uhf-4M; session 48)
    "vhf-uhf-4M": dict(profile="vhf-uhf", seed=7511, sample_rate=4e6, duration=0.55, n_signals=12, n=12,
                       center_freq=162e6),
    # likewise at narrowband's highest rate, where nothing keeps up beside it in real time on 2
    # cores (carrier did in one run of three: bench/realtime_quality.py --set vhf-uhf-6M; session 49)
    "vhf-uhf-6M": dict(profile="vhf-uhf", seed=7521, sample_rate=6.4e6, duration=0.55, n_signals=12, n=12,
                       center_freq=162e6),
}
REALTIME_ONLY_SETS = ("vhf-uhf-4M", "vhf-uhf-6M")
SNR_LO, SNR_HI = 0.0, 25.0
DEFAULT_SETS = ["torchsig", *(name for name in SYNTH_SETS if name not in REALTIME_ONLY_SETS)]
AGNOSTIC_ONLY = {"torchsig"}  # TorchSig's class names are not our labels
# recall_by_snr's band names (training/detection_metrics.py SNR_BANDS), in order, and their short names
BANDS = [("< 0 dB", "<0"), ("0-5 dB", "0-5"), ("5-10 dB", "5-10"), ("10-15 dB", "10-15"),
         ("15-20 dB", "15-20"), (">= 20 dB", "20+")]
BAND_MID = {"< 0 dB": -2.5, "0-5 dB": 2.5, "5-10 dB": 7.5, "10-15 dB": 12.5, "15-20 dB": 17.5, ">= 20 dB": 22.5}


def synth_command(name: str, cfg: dict, n: int) -> str:
    return (f"rfdetect synth bench/.cache/heldout/{name} --profile {cfg['profile']} --n {n} --seed {cfg['seed']} "
            f"--sample-rate {cfg['sample_rate'] / 1e6:g}e6 --duration {cfg['duration']:g} --signals {cfg['n_signals']} "
            f"--snr-min {SNR_LO:g} --snr-max {SNR_HI:g} --center-freq {cfg['center_freq'] / 1e6:g}e6")


def ensure_synth_set(name: str, cfg: dict, n: int) -> list[str]:
    """Recordings 0..n-1 of a synthetic held-out set, written where missing (a recording
    depends only on seed, index and the settings, so the cache grows without changing)."""
    from gnuradio.rfdetect.apps.synth import SynthConfig, write_synth
    d = HELDOUT / name
    d.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in cfg.items() if k != "n"}
    settings.update(snr_db=[SNR_LO, SNR_HI], artefacts="drawn per recording (profile odds)", min_gap=2048,
                    datatype="cf32_le", command=synth_command(name, cfg, n),
                    note="held-out: never use for training, tuning or model selection")
    stamp_file = d / "heldout.json"
    if stamp_file.exists():
        old = json.loads(stamp_file.read_text())
        if {k: old.get(k) for k in cfg if k != "n"} != {k: settings[k] for k in cfg if k != "n"}:
            raise SystemExit(f"{d} holds recordings made with other settings ({stamp_file}); move it away")
    stamp_file.write_text(json.dumps(settings, indent=1))
    sc = SynthConfig(cfg["sample_rate"], cfg["duration"], (SNR_LO, SNR_HI), cfg["n_signals"], None,
                     cfg["center_freq"], cfg["profile"], None, None, 2048)
    sc.check()
    out = []
    for i in range(n):
        base = d / f"synth_{cfg['seed']}_{i:04d}"
        meta = base.with_name(base.name + ".sigmf-meta")
        if not (meta.exists() and base.with_name(base.name + ".sigmf-data").exists()):
            t = time.perf_counter()
            write_synth(base, cfg["seed"], i, sc, "cf32_le")
            print(f"  {name}: wrote {base.name} ({time.perf_counter() - t:.1f} s)", flush=True)
        out.append(str(meta))
    return out


def set_recordings(name: str, path: str | None, n: int | None) -> list[str]:
    if path is None and name in SYNTH_SETS:
        return ensure_synth_set(name, SYNTH_SETS[name], n or SYNTH_SETS[name]["n"])
    from rfdetect_training.prepare import find_recordings
    d = Path(path) if path else HELDOUT / name
    if not d.is_dir():
        hint = " (make it: bench/torchsig_setup.sh, then docs/heldout.md)" if name == "torchsig" else ""
        raise SystemExit(f"set {name}: no folder {d}{hint}")
    recs = [str(r) for r in find_recordings(d)]
    return recs[:n] if n else recs


class Timed:
    """A Detector model whose detect() calls are timed (as the TileDetector's statistics do)."""

    def __init__(self, model):
        self.model = model
        self.ms: list[float] = []

    def __getattr__(self, k):
        return getattr(self.model, k)

    def detect(self, tile):
        t = time.perf_counter()
        out = self.model.detect(tile)
        self.ms.append((time.perf_counter() - t) * 1e3)
        return out


def evaluate(model_name: str, spec: str, set_name: str, recs: list[str], score_threshold,
             truth: str = "resolvable", out: Path = RESULTS) -> tuple[dict, dict]:
    """One (model, set), scored as training/evaluate.py evaluate_detector does (the
    truth/found groups kept at hand for AP >= 10 dB) -> (its results, its AP50 on each resample
    of the recordings by band: :func:`spread`)."""
    from rfdetect_training.detection_metrics import ap_in_snr_range
    from rfdetect_training.evaluate import MATCH_IOU, detect_groups, score_groups, write_report
    from gnuradio.rfdetect.inference.model_runtime import resolve_auto_for_recordings
    specs, _ = resolve_auto_for_recordings(spec.split(COMBINE), recs)  # 'auto' as `rfdetect detect` resolves it
    # every model down to the AP floor, so that AP sees each model's whole curve; P/R/F1 take
    # each model's records at its own threshold, as `rfdetect detect` runs them together
    from rfdetect_training.evaluate import load_for_scoring
    loaded, labels, at = load_for_scoring(specs, score_threshold, AP_FLOOR, overlap=OVERLAP)
    (_, ds, thr), branches = loaded[0], loaded[1:]
    timed = [Timed(m) for m, _, _ in loaded]
    t0 = time.perf_counter()
    truth_all, found_all = detect_groups(timed[0], ds, recs, progress=False, truth=truth,
                                         branches=[(t, d) for t, (_, d, _) in zip(timed[1:], branches)])
    r = score_groups(truth_all, found_all, labels, at)
    r["recordings"] = len(recs)
    if specs != spec.split(COMBINE):
        r["resolved"] = COMBINE.join(specs)  # what 'auto' stood for on this set
    r["truth"] = truth
    r["ap50_snr_ge_10"] = ap_in_snr_range(truth_all, found_all, 10.0, math.inf, MATCH_IOU)
    draws = spread(truth_all, found_all, r)
    r["tiles"] = sum(len(t.ms) for t in timed)
    # a combination: the sum of its models' medians (each on tiles of its own spectrogram)
    r["ms_per_tile_p50"] = round(sum(sorted(t.ms)[len(t.ms) // 2] for t in timed), 1) \
        if all(t.ms for t in timed) else None
    r["wall_s"] = round(time.perf_counter() - t0, 1)
    # a combination: each model's own threshold, in the order given ("0.25+0")
    r["score_threshold"] = COMBINE.join(f"{t:g}" for t in at.values()) if branches else thr
    r["model_labels"] = labels
    truth_labels = [t["label"] for g in truth_all for t in g]
    known = sum(lab in set(labels) for lab in truth_labels)
    r["set_labels"] = sorted(set(truth_labels))
    r["labels_apply"] = set_name not in AGNOSTIC_ONLY and bool(truth_labels) and known >= 0.5 * len(truth_labels)
    write_report(out / set_name / _slug(model_name),
                 {"arch": f"{model_name} ({spec})", "backbone": "-", "labels": labels,
                  "score_threshold": thr, "recordings": recs, "physical": r,
                  "pixel_note": "whole recordings only: see the physical section"})
    return r, draws


def spread(truth_all, found_all, r: dict) -> dict:
    """The 5th and 95th percentiles of class-agnostic AP50 over BOOTSTRAP_DRAWS resamples of
    the set's recordings (training/detection_metrics.py bootstrap_ap), overall, from 10 dB
    and per SNR band, into ``r``: how far the number could move with other recordings of
    the same settings. A draw with no signal in a band is left out of that band's range.
    -> the draws, by band."""
    from rfdetect_training.detection_metrics import bootstrap_ap, snr_band_ranges
    from rfdetect_training.evaluate import MATCH_IOU
    ranges = snr_band_ranges()
    boot = {"all": bootstrap_ap(truth_all, found_all, iou=MATCH_IOU),
            ">= 10": bootstrap_ap(truth_all, found_all, 10.0, math.inf, MATCH_IOU)}
    for band in r["ap50_by_snr"]:
        boot[band] = bootstrap_ap(truth_all, found_all, *ranges[band], MATCH_IOU)
    interval = {k: _percentiles(v, len(truth_all)) for k, v in boot.items()}
    r["ap50"]["class_agnostic_AP_interval"] = interval["all"]
    r["ap50_snr_ge_10_interval"] = interval[">= 10"]
    for band, v in r["ap50_by_snr"].items():
        v["interval"] = interval[band]
    return boot


def _percentiles(draws, recordings: int):
    import numpy as np
    ok = draws[np.isfinite(draws)]
    # one recording resampled is that recording every time: no range to give
    return [round(float(x), 4) for x in np.percentile(ok, [5, 95])] if len(ok) and recordings > 1 else None


def compare_with_energy(res: dict, draws: dict) -> None:
    """For each model's SNR bands: the share of resamples (the same recordings drawn for
    every model: paired) in which its AP50 is below ``energy``'s (issue 12: at least as good
    in every band), as ``below_energy_share``. ``draws``: each model's :func:`spread`."""
    import numpy as np
    base = draws.get("energy")
    for m, r in res.items():
        boot = draws.get(m)
        if base is None or boot is None or m == "energy":
            continue
        for band, v in r["ap50_by_snr"].items():
            a, e = boot.get(band), base.get(band)
            if a is None or e is None:
                continue
            ok = np.isfinite(a) & np.isfinite(e)
            v["below_energy_share"] = round(float(np.mean(a[ok] < e[ok])), 3) if ok.any() else None


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", s)


def fmt(v, digits=2):
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _shown(path: Path) -> str:
    """``path`` as the docs show it: from the repository root when it is inside."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _span(interval) -> str:
    return f" ({interval[0]:.2f}-{interval[1]:.2f})" if interval else ""


def set_table(results: dict, models: list[str]) -> str:
    rows = ["| model | AP50 any label | AP50 >= 10 dB | mAP50 | precision | recall | F1 | "
            + " | ".join(f"recall {s} dB" for _, s in BANDS) + " | ms / tile (p50) | threshold |",
            "|---|" + "---|" * (8 + len(BANDS))]
    for m in models:
        r = results.get(m)
        if r is None:
            continue
        ap, ca, snr = r["ap50"], r["class_agnostic"], r["recall_by_snr"]
        mAP = fmt(ap.get("mAP")) if r["labels_apply"] else "n/a"
        name = m + (f" ({r['resolved']})" if r.get("resolved") else "")
        rows.append(f"| {name} | {fmt(ap.get('class_agnostic_AP'))}{_span(ap.get('class_agnostic_AP_interval'))} | "
                    f"{fmt(r['ap50_snr_ge_10'])}{_span(r.get('ap50_snr_ge_10_interval'))} | {mAP} | "
                    f"{ca['precision']:.2f} | {ca['recall']:.2f} | {ca['f1']:.2f} | "
                    + " | ".join(fmt(snr[b]["recall"]) if b in snr else "-" for b, _ in BANDS)
                    + f" | {fmt(r['ms_per_tile_p50'], 0)} | {r['score_threshold']} |")
    any_r = next(iter(results.values()))
    counts = ", ".join(f"{s}: {any_r['recall_by_snr'][b]['truth']}" for b, s in BANDS if b in any_r["recall_by_snr"])
    rows.append("")
    rows.append(f"{any_r['recordings']} recordings, {any_r['class_agnostic']['truth']} signals "
                f"(per SNR band, dB: {counts}); labels in the set: {', '.join(any_r['set_labels'])}")
    return "\n".join(rows)


def per_class_table(all_results: dict, models: list[str]) -> str:
    rows = []
    for set_name, res in all_results.items():
        for m in models:
            r = res.get(m)
            if not r or not r["labels_apply"]:
                continue
            pc = {k: v for k, v in r["ap50"]["per_class_AP"].items() if v is not None}
            rows.append(f"| {set_name} | {m} | {fmt(r['ap50'].get('mAP'))} | "
                        + ", ".join(f"{k} {v:.2f}" for k, v in pc.items()) + " |")
    if not rows:
        return "No set's labels match a model's labels."
    return "\n".join(["| set | model | mAP50 | AP50 per class |", "|---|---|---|---|", *rows])


def snr_ap_table(all_results: dict, models: list[str]) -> str:
    """Class-agnostic AP50 per SNR band (training/detection_metrics.py ap_by_snr), with the
    bands where a model is below ``energy`` (issue 12: at least as good in every band)."""
    energy = next((m for m in models if m == "energy"), None)
    rows = ["| set | model | " + " | ".join(f"{s} dB" for _, s in BANDS)
            + (" | below `energy` in |" if energy else " |"),
            "|---|---|" + "---|" * len(BANDS) + ("---|" if energy else "")]
    for set_name, res in all_results.items():
        base = (res.get(energy) or {}).get("ap50_by_snr", {}) if energy else {}
        for m in models:
            by = (res.get(m) or {}).get("ap50_by_snr")
            if not by:
                continue
            ap = {b: (by.get(b) or {}).get("AP") for b, _ in BANDS}
            row = f"| {set_name} | {m} | " + " | ".join(fmt(ap[b]) for b, _ in BANDS) + " |"
            if energy:
                below = [s + (f" ({by[b]['below_energy_share']:.0%})" if by[b].get("below_energy_share") is not None
                              else "")
                         for b, s in BANDS if ap[b] is not None and (base.get(b) or {}).get("AP") is not None
                         and ap[b] < base[b]["AP"]]
                row += " |" if m == energy else f" {', '.join(below) or 'none'} |"
            rows.append(row)
    return "\n".join(rows)


def label_recall_table(all_results: dict, models: list[str]) -> str:
    """Recall (any label) per truth label, most frequent label first, on every set but
    TorchSig (45 classes of a few signals each): which families a model does not box at all."""
    rows = []
    for set_name, res in all_results.items():
        for m in models:
            r = res.get(m)
            if not r or set_name in AGNOSTIC_ONLY or not r.get("recall_by_label"):
                continue
            byl = sorted(r["recall_by_label"].items(), key=lambda kv: (-kv[1]["truth"], kv[0]))
            rows.append(f"| {set_name} | {m} | " + ", ".join(f"{k} {v['recall']:.2f} ({v['truth']})" for k, v in byl)
                        + " |")
    if not rows:
        return "Only TorchSig sets were run: it is left out of this table."
    return "\n".join(["| set | model | recall (any label) per truth label (signals) |", "|---|---|---|", *rows])


def plot_set(set_name: str, res: dict, models: list[str]) -> str:
    name = f"quality_{_slug(set_name)}.png"

    def draw(ax):
        for m in models:
            r = res.get(m)
            if not r:
                continue
            pts = sorted((BAND_MID[b], v["recall"]) for b, v in r["recall_by_snr"].items() if b in BAND_MID)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-",
                    label=f"{m} (AP50 {fmt(r['ap50'].get('class_agnostic_AP'))})")
        ax.set_xticks([BAND_MID[b] for b, _ in BANDS], [s for _, s in BANDS])
        ax.set_xlabel("SNR band (dB, in-band, per annotation)")
        ax.set_ylabel("recall, any label (IoU >= 0.5)")
        ax.set_ylim(0, 1.02)
        ax.set_title(f"held-out set: {set_name}")
        ax.legend(fontsize=8)
    save_plot(draw, name, size=(6, 3.6))
    return name


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", default=[], metavar="NAME=SPEC",
                    help="a model to add (repeatable): NAME=default|energy|folder|file[?options]")
    ap.add_argument("--no-default-models", action="store_true", help="only the --model ones")
    ap.add_argument("--set", action="append", default=[], metavar="NAME[=DIR]",
                    help=f"a held-out set (repeatable; default: {', '.join(DEFAULT_SETS)})")
    ap.add_argument("--quick", action="store_true", help="2 recordings per set")
    ap.add_argument("--n", type=int, help="recordings per set (default: all of a folder; a synthetic set's own n)")
    ap.add_argument("--score-threshold", type=float,
                    help="for P/R/F1 and recall (default: each model's card threshold; 0 for energy)")
    from rfdetect_training.prepare import TRUTH_RULES
    ap.add_argument("--truth", choices=TRUTH_RULES, default="resolvable",
                    help="truth boxes smaller than 2 rows x 2 columns of the model's spectrogram widened to "
                         "that size, as training learns them (default), or the annotations exactly "
                         "(rfdetect-train evaluate --truth)")
    ap.add_argument("--no-write", action="store_true", help="print only (no docs/ changes)")
    ap.add_argument("--out", type=Path, default=RESULTS,
                    help=f"where results.json and each (set, model) report go (default {RESULTS.relative_to(ROOT)})")
    a = ap.parse_args()
    models = named_models(ap, a.model, {} if a.no_default_models else {"default": "default", "energy": "energy"})
    if not models:
        ap.error("no models")
    sets = {}
    for s in a.set or DEFAULT_SETS:
        name, _, path = s.partition("=")
        if not path and name not in DEFAULT_SETS:
            ap.error(f"--set {s!r}: not a default set ({', '.join(DEFAULT_SETS)}); give NAME=DIR")
        sets[name] = path or None
    n = 2 if a.quick else a.n
    commit = git_commit()
    all_results: dict[str, dict] = {}
    set_recs = {}
    for set_name, path in sets.items():
        set_recs[set_name] = recs = set_recordings(set_name, path, n)
        all_results[set_name], draws = {}, {}
        for m, spec in models.items():
            r, draws[m] = evaluate(m, spec, set_name, recs, a.score_threshold, a.truth, a.out)
            all_results[set_name][m] = r
            print(f"{set_name:12s} {m:14s} AP50 {fmt(r['ap50']['class_agnostic_AP'])} (>=10 dB "
                  f"{fmt(r['ap50_snr_ge_10'])}) mAP50 {fmt(r['ap50']['mAP']) if r['labels_apply'] else 'n/a'} "
                  f"P {r['class_agnostic']['precision']:.2f} R {r['class_agnostic']['recall']:.2f} "
                  f"F1 {r['class_agnostic']['f1']:.2f}  {r['ms_per_tile_p50']} ms/tile x {r['tiles']}  "
                  f"({r['wall_s']} s)", flush=True)
        compare_with_energy(all_results[set_name], draws)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "results.json").write_text(json.dumps(
        {"commit": commit, "command": " ".join(shlex.quote(x) for x in sys.argv), "models": models,
         "sets": {k: set_recs[k] for k in sets}, "results": all_results}, indent=1))
    names = list(models)
    parts = []
    for set_name, res in all_results.items():
        what = (SYNTH_SETS[set_name] if set_name in SYNTH_SETS and sets[set_name] is None else None)
        src = (f"`{synth_command(set_name, what, len(set_recs[set_name]))}`" if what
               else f"`{sets[set_name] or 'bench/.cache/heldout/' + set_name}` ({len(set_recs[set_name])} recordings"
                    + (", docs/heldout.md" if set_name == "torchsig" else "") + ")")
        parts += [f"**{set_name}**: {src}", "", set_table(res, names), ""]
        if not a.no_write:
            parts += [f"![recall vs SNR, {set_name}]({plot_set(set_name, res, names)})", ""]
    parts += ["**AP50 per class** (sets whose labels are the model's):", "", per_class_table(all_results, names), ""]
    parts += ["**AP50 (any label) per SNR band**: each band's truth only; a found box counts in the band of "
              "the signal it overlaps most (hit or false alarm there, left out of the others); one on no "
              "signal is a false alarm in every band. Where a model is below `energy`, the share in brackets "
              f"is that of {BOOTSTRAP_DRAWS} resamples of the set's recordings (the same ones for both) in "
              "which it is below: near 100 % a gap the set's recordings agree on, near 50 % one they may have "
              "decided (where `energy` is perfect in every resample, the share only counts how often a "
              "resample holds the model's misses); "
              f"each band's 5-95 % range is in {_shown(a.out)}/results.json and SET/MODEL/report.json:", "",
              snr_ap_table(all_results, names), ""]
    parts += ["**Recall (any label) per truth label**, at each model's threshold, most frequent first: "
              "a family with low recall here is not boxed at all; one high here but low in AP50 per "
              "class is boxed but not named (reported as `signal`):", "", label_recall_table(all_results, names), ""]
    # auto's threshold is the card's of the model it picks, which differs by set
    evals = [f"rfdetect-train evaluate --model {spec} --recordings DIR --out REPORT"
             + ("" if spec.partition("?")[0] == "auto" else
                f" --score-threshold {next(iter(all_results.values()))[m]['score_threshold']:g}")
             + (" --truth exact" if a.truth == "exact" else "")
             for m, spec in models.items() if COMBINE not in spec]
    combos = [" ".join(f"--model {s}" for s in spec.split(COMBINE)) for spec in models.values() if COMBINE in spec]
    said = []
    if evals:
        said.append("Each row is what `" + "`, `".join(evals) + "` reports for that set's recordings "
                    f"(`{_shown(a.out)}/SET/MODEL/report.md`)")
    if combos:
        said.append("a row of models joined by `+` is what `rfdetect detect REC " + "`, `rfdetect detect REC ".join(combos)
                    + "` reports, scored the same way")
    parts += ["; ".join(said) + "."]
    body = "\n".join(parts)
    header = stamp(f"models {', '.join(f'{k}={v}' for k, v in models.items())}; "
                   f"{'quick (2 recordings per set)' if a.quick else 'full sets'}; IoU >= 0.5 in seconds x Hz, "
                   f"{a.truth} truth; "
                   f"commit {commit}")
    print(header)
    print(body)
    if not a.no_write:
        write_section("performance.md", "bench/quality.py", header, body)


if __name__ == "__main__":
    main()
