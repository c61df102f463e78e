#!/usr/bin/env python3
"""Resident memory over a long real-time run with every sink attached: the slope must be flat.

    .venv/bin/python bench/memory.py [--minutes 60] [--rate 2.4e6] [--every 10] [--out DIR]
    .venv/bin/python bench/memory.py --finalise 200000     (the SigMF sink's stop alone)
    .venv/bin/python bench/memory.py --slopes OUT/rss.json  (the slopes of a finished run again)

Real-time playback with the default model (bench/live_run.py) into the ZMQ PUB Sink
(with a subscriber that keeps up), the JSONL Sink and the SigMF Annotation Sink
(metadata-only, as for a live SDR). The process's resident memory (VmRSS) is sampled
every --every seconds; one progress line a minute (RSS, JSONL lines, journal bytes)
goes to stdout. At the end: the least-squares RSS slope over the whole run and over
its second half (after warm-up), in MB per hour, the output sizes, and whether the
finalised .sigmf-meta passes sigmf-python's validation; writes docs/memory_soak.png
and its section of docs/reliability.md (unless --no-write).
"""
import argparse
import json
import threading
import time
from pathlib import Path

import numpy as np

from bench_report import save_plot, stamp, write_section
from live_run import CACHE, at_rate, base_recording, rss_mb, run_live


def slope_mb_per_hour(points) -> float:
    t, m = np.array(points).T
    return float(np.polyfit(t, m, 1)[0] * 3600) if len(t) > 2 else float("nan")


def floor_slope_mb_per_hour(points, window_s: float = 300.0) -> float:
    """Slope of the lowest RSS in each ``window_s``: a leak lifts the floor, while the
    transient working set of a Detector that falls behind (tiles queued, then dropped,
    when the shared machine is busy) only adds spikes above it."""
    t, m = np.array(points).T
    floors = [(w * window_s, m[(t >= w * window_s) & (t < (w + 1) * window_s)].min())
              for w in range(int(t[-1] // window_s) + 1) if ((t >= w * window_s) & (t < (w + 1) * window_s)).any()]
    return slope_mb_per_hour(floors)


def slopes(points) -> dict:
    half = [p for p in points if p[0] >= points[-1][0] / 2]
    return {"whole": slope_mb_per_hour(points), "second_half": slope_mb_per_hour(half),
            "floor": floor_slope_mb_per_hour(points)}


def count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    except FileNotFoundError:
        return 0


def time_finalise(n: int, folder: Path) -> None:
    """Time the SigMF Annotation Sink's writer: ``n`` annotations added (in blocks of
    1000, spread over sample_start as a long run's are), then finalised."""
    import resource
    from gnuradio.rfdetect.formats.record_outputs import AnnotationWriter
    folder.mkdir(parents=True, exist_ok=True)
    w = AnnotationWriter(folder / "finalise", sample_rate=2.4e6, center_freq=915e6)
    t0 = time.perf_counter()
    for i in range(0, n, 1000):
        w.add([{"event": "update", "sample_start": (j * 7919) % 10 ** 9, "sample_count": 2400, "f_low": 914e6,
                "f_high": 915e6, "label": "signal", "score": 0.9, "model": "energy", "t_start": j / 2.4e6,
                "t_stop": j / 2.4e6 + 1e-3, "track_id": j} for j in range(i, min(n, i + 1000))])
    t1 = time.perf_counter()
    w.finalise()
    t2 = time.perf_counter()
    size = (folder / "finalise.sigmf-meta").stat().st_size
    print(f"{n} annotations: add {t1 - t0:.1f} s, finalise {t2 - t1:.1f} s ({(t2 - t1) / n * 1e6:.0f} us each), "
          f".sigmf-meta {size / 1e6:.0f} MB, peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB "
          f"(GNU Radio's own included), `{' '.join(['python'] + __import__('sys').argv)}`")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--rate", type=float, default=2.4e6, help="real-time sample rate (default: an RTL-SDR's)")
    ap.add_argument("--every", type=float, default=10.0)
    ap.add_argument("--out", type=Path, default=CACHE / "soak", help="folder for the JSONL and SigMF outputs")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--slopes", type=Path, metavar="RSS_JSON", help="only print the slopes of a run's rss.json")
    ap.add_argument("--finalise", type=int, default=0, metavar="N",
                    help="only time finalising N annotations in the SigMF Annotation Sink's writer")
    a = ap.parse_args()
    if a.finalise:
        return time_finalise(a.finalise, a.out / "finalise")
    if a.slopes:
        sl = slopes(json.loads(a.slopes.read_text())["rss"])
        return print(" ".join(f"{k} {v:+.1f} MB/h" for k, v in sl.items()))
    from gnuradio import rfdetect
    a.out.mkdir(parents=True, exist_ok=True)
    jsonl_path, sigmf_base = a.out / "soak.jsonl", a.out / "soak"
    journal = Path(str(sigmf_base) + ".sigmf-meta.journal")

    def attach(tb, tracks):
        jsonl = rfdetect.jsonl_sink(str(jsonl_path))
        ann = rfdetect.sigmf_annotation_sink(str(sigmf_base), samp_rate=a.rate, center_freq=915e6)
        for blk in (jsonl, ann):
            tb.msg_connect(tracks, "out", blk, "in")
        return [jsonl, ann]

    stop = threading.Event()

    def progress():  # a second reader of the files while they are written
        t0 = time.monotonic()
        while not stop.wait(60):
            size = journal.stat().st_size if journal.exists() else 0
            print(f"{(time.monotonic() - t0) / 60:6.1f} min  RSS {rss_mb():7.1f} MB  JSONL lines "
                  f"{count_lines(jsonl_path):8d}  journal {size / 1e6:8.2f} MB", flush=True)

    mon = threading.Thread(target=progress, daemon=True)
    mon.start()
    r = run_live(at_rate(base_recording(), a.rate), a.minutes * 60, models=["default"], rss_every_s=a.every,
                 attach=attach)
    stop.set()
    mon.join(timeout=5)
    import sigmf
    handle = sigmf.sigmffile.fromfile(str(sigmf_base) + ".sigmf-meta")  # validates
    n_ann = len(handle.get_annotations())
    n_lines = count_lines(jsonl_path)
    pts = r["rss"]
    sl = slopes(pts)
    mem = [m for _, m in pts]
    rows = ["| samples | RSS min / median / max MB | slope, whole run | slope, second half | slope of the 5-min "
            "floor | tiles | dropped | JSONL lines | SigMF annotations (valid) | ZeroMQ sent / received |",
            "|---|---|---|---|---|---|---|---|---|---|",
            f"| {len(pts)} | {min(mem):.0f} / {np.median(mem):.0f} / {max(mem):.0f} | "
            f"{sl['whole']:+.1f} MB/h | {sl['second_half']:+.1f} MB/h | {sl['floor']:+.1f} MB/h | {r['tiles_done']} | "
            f"{r['tiles_dropped']} | {n_lines} | {n_ann} | {r['zmq_sent']} / {r['received']} |"]
    table = "\n".join(rows)
    header = stamp(f"{a.minutes:g} min at {a.rate / 1e6:g} MS/s real time, default model, ZMQ PUB + JSONL + "
                   f"SigMF Annotation sinks, RSS every {a.every:g} s")
    print(header)
    print(table)
    print(json.dumps({"rss": pts}), file=open(a.out / "rss.json", "w"))
    if not a.no_write:
        def draw(ax):
            ax.plot([t / 60 for t, _ in pts], mem)
            ax.set_xlabel("minutes")
            ax.set_ylabel("resident memory (MB)")
            ax.set_title(f"{a.minutes:g} min real-time run, {a.rate / 1e6:g} MS/s, all sinks")
        save_plot(draw, "memory_soak.png", size=(7, 3))
        write_section("reliability.md", "bench/memory.py", header, table + "\n\n![RSS](memory_soak.png)")


if __name__ == "__main__":
    main()
