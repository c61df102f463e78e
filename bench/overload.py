#!/usr/bin/env python3
"""Latency and drops of the real-time Detector under overload: this tree's policy (drop
the oldest waiting tile, default deadline) against the engine of an earlier commit.

    .venv/bin/python bench/overload.py [--tiles 128,512] [--loads 0.5,1.5,3] [--deadlines auto,0]
        [--before 87993a0] [--repeats 5] [--tile-periods 60] [--no-write]

A SigMF recording paced at 2 MS/s (a stand-in for an SDR) -> STFT Tile -> Detector in
realtime mode, fft 1024, hop 512, tiles of 128 rows (16 overlap: a new tile every
28.7 ms) and 512 rows (64 overlap: every 115 ms), queue of 4 tiles. The model only
sleeps, for ``load`` tile periods per tile: load 1.5 means tiles arrive 1.5x faster
than the Detector can take them. A sleep, not computation, so that the load is what
the row says whatever else the machine's cores are doing (the load average is printed
with the results). Each run lasts ``--tile-periods`` tile periods (at least 4 s).

Rows: the engine (python/rfdetect/tile_detector.py) as it was at ``--before`` with its
default (drop the newest tile, no deadline), then this tree's engine with each of
``--deadlines`` ("auto": the Detector's default; 0: none; else seconds).

Latency of a processed tile: from its last row entering the Detector to its detections
being posted (the Detector's ``entered_s`` -> the ``detections`` message). Per row: the
median over ``--repeats`` runs of each run's p50 and p99, with the spread (min-max over
the runs), the largest latency seen, the median share of tiles dropped, and how many
tile messages were posted out of tile order in all runs (the policy says 0). Writes its
section of docs/reliability.md unless --no-write.
"""
import argparse
import importlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
from gnuradio import gr

from bench_report import ROOT, med_spread, stamp, write_section
from gnuradio import rfdetect
from gnuradio.rfdetect.dsp.spectrogram import SpectrogramParams
from gnuradio.rfdetect.formats.sigmf_io import new_meta, write_recording

# the module, not the block class that gnuradio.rfdetect exports under the same name
detector_module = importlib.import_module("gnuradio.rfdetect.blocks.detector")

RATE = 2e6
PARAMS = SpectrogramParams(fft_size=1024, hop=512, width=512)
QUEUE = 4


def tile_shape(height: int) -> dict:
    return dict(tile_height=height, overlap=height // 8)


def period_s(height: int) -> float:
    """Stream time of one tile's new rows: a new tile arrives this often."""
    shape = tile_shape(height)
    return (shape["tile_height"] - shape["overlap"]) * PARAMS.hop / RATE


def recording(folder: Path, seconds: float) -> Path:
    """Noise with a 40 ms tone burst every 100 ms (the Detector has something to find)."""
    rng = np.random.default_rng(1)
    n = int(seconds * RATE)
    iq = ((rng.standard_normal(n) + 1j * rng.standard_normal(n)) * 0.02).astype(np.complex64)
    t = np.arange(int(0.04 * RATE)) / RATE
    burst = (0.3 * np.exp(2j * np.pi * 200e3 * t)).astype(np.complex64)
    for start in range(0, n - len(burst), int(0.1 * RATE)):
        iq[start:start + len(burst)] += burst
    return write_recording(folder / f"overload_{seconds:g}s", iq, new_meta(RATE, "ci8", 915e6))[0]


def engine_from(commit: str):
    """The TileDetector class of python/rfdetect/tile_detector.py at ``commit``."""
    src = subprocess.run(["git", "show", f"{commit}:python/rfdetect/tile_detector.py"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    mod = types.ModuleType(f"gnuradio.rfdetect._tile_detector_{commit}")
    mod.__package__ = "gnuradio.rfdetect"
    sys.modules[mod.__name__] = mod  # dataclasses look their module up there
    exec(compile(src, f"tile_detector.py@{commit}", "exec"), mod.__dict__)

    class Then(mod.TileDetector):
        def push_rows(self, rows, arrived_unix=None):  # older engines took rows only
            return super().push_rows(rows)
    return Then


def run_once(rec: Path, height: int, load: float, deadline_s: float, engine=None) -> dict:
    tb = gr.top_block()
    src = rfdetect.sigmf_source(str(rec), realtime=True)
    stft = rfdetect.stft_tile(fft_size=PARAMS.fft_size, hop=PARAMS.hop, width=PARAMS.width, device="cpu")
    det = rfdetect.detector(models="energy", mode="realtime", width=PARAMS.width, queue_size=QUEUE,
                            deadline_s=deadline_s, samp_rate=RATE, **tile_shape(height))
    this_tree = detector_module.TileDetector
    detector_module.TileDetector = engine or this_tree
    try:
        det.configure(PARAMS)
    finally:
        detector_module.TileDetector = this_tree
    eng = det.engine
    model = eng.models[0]

    def slow(tile):
        time.sleep(load * period_s(height))
        return []
    model.detect = slow
    latencies, order = [], []
    post = eng.on_tile

    def timed(info, records):
        if not info.get("dropped") and "entered_s" in info:
            latencies.append((time.monotonic() - info["entered_s"]) * 1e3)
        order.append(info["index"])
        post(info, records)
    eng.on_tile = timed
    tb.connect(src, stft, det)
    tb.python_blocks = (src, stft, det)
    tb.run()
    st = det.stats()
    n = st["tiles_done"] + st["tiles_dropped"]
    return {"p50": float(np.percentile(latencies, 50)), "p99": float(np.percentile(latencies, 99)),
            "max": max(latencies), "dropped": st["tiles_dropped"] / max(n, 1),
            "out_of_order": sum(b < a for a, b in zip(order, order[1:])),
            "deadline": st.get("deadline_s", deadline_s)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiles", default="128,512", help="tile heights (overlap: 1/8 of the height)")
    ap.add_argument("--loads", default="0.5,1.5,3")
    ap.add_argument("--deadlines", default="auto,0", help="this tree's engine: 'auto' (the default) or seconds")
    ap.add_argument("--before", default="87993a0", help="commit whose engine to compare with ('' for none)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--tile-periods", type=float, default=60.0)
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    settings = ([(f"{a.before} (drop newest)", engine_from(a.before), 0.0)] if a.before else []) + \
        [("this tree", None, -1.0 if dl == "auto" else float(dl)) for dl in a.deadlines.split(",")]
    load_avg = []
    rows = ["| tile period ms | model time / tile period | engine | deadline | latency p50 ms, median (spread) | "
            "p99 ms, median (spread) | max ms | dropped, median | out of order |",
            "|---|---|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as d:
        for height in (int(x) for x in a.tiles.split(",")):
            seconds = max(4.0, a.tile_periods * period_s(height))
            rec = recording(Path(d), seconds)
            for load in (float(x) for x in a.loads.split(",")):
                for name, engine, deadline in settings:
                    runs = []
                    for _ in range(a.repeats):
                        runs.append(run_once(rec, height, load, deadline, engine))
                        load_avg.append(os.getloadavg()[0])
                    p50, p50_spread = med_spread([r["p50"] for r in runs], "{:.0f}")
                    p99, p99_spread = med_spread([r["p99"] for r in runs], "{:.0f}")
                    used = runs[0]["deadline"]
                    dl = ("none" if deadline == 0 else f"{deadline:g} s") if deadline >= 0 else \
                        f"default ({used * 1e3:.0f} ms)"
                    rows.append(f"| {period_s(height) * 1e3:.1f} | {load:g} | {name} | {dl} | {p50:.0f} ({p50_spread}) "
                                f"| {p99:.0f} ({p99_spread}) | {max(r['max'] for r in runs):.0f} | "
                                f"{statistics.median(r['dropped'] for r in runs) * 100:.0f} % | "
                                f"{sum(r['out_of_order'] for r in runs)} |")
                    print(rows[-1], flush=True)
    table = "\n".join(rows)
    header = stamp(f"{a.repeats} runs per row, each {a.tile_periods:g} tile periods (at least 4 s), 2 MS/s paced, "
                   f"queue {QUEUE}, 1-min load average {min(load_avg):.1f}-{max(load_avg):.1f} on "
                   f"{os.cpu_count()} cores")
    print(header)
    if not a.no_write:
        write_section("reliability.md", "bench/overload.py", header, table)


if __name__ == "__main__":
    main()
