#!/usr/bin/env python3
"""Highest real-time sample rate sustained with zero dropped tiles and zero source stalls.

    .venv/bin/python bench/realtime.py [--rates 5e6,8e6,10e6,12e6,15e6,20e6] [--probe 20] [--confirm 300]
        [--models default] [--iq-detector [--companions [all|auto]]] [--profile classic] [--center-freq HZ]

A SigMF recording paced at each rate stands in for an SDR (bench/live_run.py): the
default model, realtime mode. --iq-detector runs the models ("auto" among them) in the IQ
Detector block, with --companions (or --companions all) all that ``rfdetect detect`` runs
beside auto's choice, with --companions auto those the block's Companions Auto runs in
real-time mode at each rate (the companions that kept up there: AUTO_COMPANIONS);
--profile and --center-freq pick the recording's spectrum and the frequency auto sees.
Each rate is probed for --probe seconds; the highest rate with no dropped tile and no
overrun (the source more than 100 ms behind the clock) is then run for --confirm seconds
(5 minutes); if that fails the next lower rate is confirmed. Writes its section of
docs/performance.md (a plain run only: an --iq-detector run prints its table).
"""
import argparse

from bench_report import stamp, write_section
from live_run import at_rate, base_recording, model_grid, run_live


def ok(r) -> bool:
    return r["tiles_dropped"] == 0 and r["overruns"] == 0


def row(kind, r):
    lat = r["latency_ms"]
    return (f"| {kind} | {r['rate'] / 1e6:g} | {', '.join(r['models'])} | {r['seconds']:.0f} | {r['tiles_done']} | {r['tiles_dropped']} | "
            f"{r['overruns']} | {r['max_lag_s'] * 1e3:.0f} | {lat.get('p50', 0):.0f} / {lat.get('p99', 0):.0f} | "
            f"{'yes' if ok(r) else 'no'} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="5e6,8e6,10e6,12e6,15e6,20e6")
    ap.add_argument("--probe", type=float, default=20.0)
    ap.add_argument("--confirm", type=float, default=300.0)
    ap.add_argument("--models", default="default")
    ap.add_argument("--iq-detector", action="store_true", help="the IQ Detector block in place of the "
                    "STFT Tile, Detector and NMS Merge")
    ap.add_argument("--companions", nargs="?", const="all", choices=("all", "auto"),
                    help="with --iq-detector: auto with all its companions (all, the default), or with those "
                    "Companions Auto runs in real time at each rate (auto)")
    ap.add_argument("--profile", default="classic", help="rfdetect synth profile of the 10 MS/s recording")
    ap.add_argument("--center-freq", type=float, default=None, help="declared centre frequency (Hz)")
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    if a.companions and not a.iq_detector:
        ap.error("--companions needs --iq-detector")
    base = base_recording(profile=a.profile)
    iq = {"companions": {None: False, "all": True, "auto": "auto"}[a.companions]} if a.iq_detector else None
    models = [m.strip() for m in a.models.split(",")]
    rates = sorted(float(x) for x in a.rates.split(","))
    rows = ["| run | MS/s | models | seconds | tiles | dropped | overruns | max source lag ms | latency p50 / p99 ms | "
            "sustained |", "|---|---|---|---|---|---|---|---|---|---|"]
    passing = []
    for rate in rates:
        r = run_live(at_rate(base, rate, a.center_freq), a.probe, models=models, iq_detector=iq)
        rows.append(row("probe", r))
        print(rows[-1], flush=True)
        if ok(r):
            passing.append(rate)
        else:
            break
    best = None
    for rate in reversed(passing):
        r = run_live(at_rate(base, rate, a.center_freq), a.confirm, models=models, iq_detector=iq)
        rows.append(row("confirm", r))
        print(rows[-1], flush=True)
        if ok(r):
            best = rate
            break
    table = "\n".join(rows)
    verdict = (f"**Highest sustained rate: {best / 1e6:g} MS/s** ({'+'.join(models)}, {a.confirm:g} s, no drops, "
               f"no stalls)." if best else "No rate was sustained.")
    if iq is not None:
        header = stamp(f"IQ Detector, models {'+'.join(models)}{f' with companions ({a.companions})' if a.companions else ''} "
                       f"(profile {a.profile}, centre {a.center_freq or 0:g} Hz), each on its card's spectrogram, "
                       f"1024-row tiles, realtime mode")
    else:
        grid = model_grid(models)
        header = stamp(f"models {'+'.join(models)}, their card's spectrogram (fft {grid.fft_size}, hop {grid.hop}), "
                       f"1024-row tiles, realtime mode")
    print(header)
    print(verdict)
    if not a.no_write and iq is None:
        write_section("performance.md", "bench/realtime.py", header, table + "\n\n" + verdict)


if __name__ == "__main__":
    main()
