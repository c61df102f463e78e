#!/usr/bin/env python3
"""Resident memory over a long real-time run: the slope must be flat.

    .venv/bin/python bench/memory.py [--minutes 30] [--rate 5e6] [--every 10]

Real-time playback with the default model (bench/live_run.py); the process's resident
memory (VmRSS) is sampled every --every seconds. Reports the least-squares slope over
the whole run and over its second half (after warm-up), in MB per hour, and writes
docs/memory_soak.png and its section of docs/reliability.md.
"""
import argparse

import numpy as np

from bench_report import save_plot, stamp, write_section
from live_run import at_rate, base_recording, run_live


def slope_mb_per_hour(points) -> float:
    t, m = np.array(points).T
    return float(np.polyfit(t, m, 1)[0] * 3600) if len(t) > 2 else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--rate", type=float, default=5e6)
    ap.add_argument("--every", type=float, default=10.0)
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    r = run_live(at_rate(base_recording(), a.rate), a.minutes * 60, models=["default"], rss_every_s=a.every)
    pts = r["rss"]
    half = [p for p in pts if p[0] >= pts[-1][0] / 2]
    mem = [m for _, m in pts]
    rows = ["| samples | RSS min / median / max MB | slope, whole run | slope, second half | tiles | dropped |",
            "|---|---|---|---|---|---|",
            f"| {len(pts)} | {min(mem):.0f} / {np.median(mem):.0f} / {max(mem):.0f} | "
            f"{slope_mb_per_hour(pts):+.1f} MB/h | {slope_mb_per_hour(half):+.1f} MB/h | {r['tiles_done']} | "
            f"{r['tiles_dropped']} |"]
    table = "\n".join(rows)
    header = stamp(f"{a.minutes:g} min at {a.rate / 1e6:g} MS/s real time, default model, RSS every {a.every:g} s")
    print(header)
    print(table)
    if not a.no_write:
        def draw(ax):
            ax.plot([t / 60 for t, _ in pts], mem)
            ax.set_xlabel("minutes")
            ax.set_ylabel("resident memory (MB)")
            ax.set_title(f"{a.minutes:g} min real-time run, {a.rate / 1e6:g} MS/s")
        save_plot(draw, "memory_soak.png", size=(7, 3))
        write_section("reliability.md", "bench/memory.py", header, table + "\n\n![RSS](memory_soak.png)")


if __name__ == "__main__":
    main()
