#!/usr/bin/env python3
"""End-to-end latency per tile, real-time playback, 1, 2 and 3 models at once.

    .venv/bin/python bench/latency.py [--rate 5e6] [--seconds 30] [--no-write]

Latency of a tile: from its last row entering the Detector to its last detection leaving
the ZMQ PUB Sink (measured inside the flowgraph, bench/live_run.py). It includes the
model time, the queue wait and one tile period whenever the NMS Merge held a detection
back for the next tile (a signal running over the tile's end). Writes its section of
docs/performance.md.
"""
import argparse

from bench_report import stamp, write_section
from live_run import at_rate, base_recording, run_live

SETS = {"default": ["default"],
        "default + energy": ["default", "energy"],
        "default + energy + default (2nd copy)": ["default", "energy", "default?name=default_b"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=5e6)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    meta = at_rate(base_recording(), a.rate)
    rows = ["| models | tiles | latency p50 ms | p99 ms | max ms | model p50 ms (each) | dropped | concurrency |",
            "|---|---|---|---|---|---|---|---|"]
    for name, models in SETS.items():
        r = run_live(meta, a.seconds, models=models)
        lat = r["latency_ms"]
        per_model = ", ".join(f"{m['latency_ms_p50']:.0f}" for m in r["models"].values())
        rows.append(f"| {name} | {lat['tiles']} | {lat['p50']:.0f} | {lat['p99']:.0f} | {lat['max']:.0f} | "
                    f"{per_model} | {r['tiles_dropped']} | {r['concurrency']} |")
        print(rows[-1], flush=True)
    table = "\n".join(rows)
    header = stamp(f"{a.rate / 1e6:g} MS/s real-time playback, {a.seconds:g} s per row, default spectrogram "
                   f"and 1024-row tiles (one tile every {896 * 2048 / a.rate * 1e3:.0f} ms)")
    print(header)
    if not a.no_write:
        write_section("performance.md", "bench/latency.py", header, table)


if __name__ == "__main__":
    main()
