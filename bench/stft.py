#!/usr/bin/env python3
"""STFT Tile block vs GNU Radio's own fft chain, same machine, same run.

    .venv/bin/python bench/stft.py [--samples 100e6] [--repeats 11]

Flowgraph A: vector_source_c (noise, repeating) -> head -> rfdetect.stft_tile(4096, hop) -> null_sink
Flowgraph B: vector_source_c -> head -> stream_to_vector(4096) -> fft_vcc(4096, Hann, shift)
             -> complex_to_mag_squared(4096) -> nlog10_ff(4096) -> null_sink   (no overlap)
Flowgraph A is also run with the NumPy row kernel (the fallback where lib/stft_rows.c was
not built) to show what the compiled kernel brings. Every source and head has a 2 M-sample
output buffer. Runs alternate so machine noise hits all; prints the median MS/s, the
spread (min-max) and the ratio of medians, then the engine alone (rows computed from a
buffer in memory, no flowgraph), and rewrites the tables in docs/performance.md. The
shared machine's speed drifts by +-20 % over minutes, so the table also gives the median
of the per-round ratios (each run over the native run of the same round).
"""
import argparse
import statistics
import time

import numpy as np
from gnuradio import blocks, fft, gr
from gnuradio.fft import window

from gnuradio import rfdetect
from gnuradio.rfdetect.spectrogram import SpectrogramEngine, SpectrogramParams

from bench_report import med_spread, stamp, write_section

# both flowgraphs get the large upstream buffer the STFT Tile's documentation asks for
BUFFER = 1 << 21


def noise(n=1 << 20):
    rng = np.random.default_rng(0)
    return (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(np.complex64)


def run_ours(x, n, fft_size, hop, kernel="auto"):
    tb = gr.top_block()
    src = blocks.vector_source_c(x, True)
    src.set_min_output_buffer(BUFFER)
    head = blocks.head(gr.sizeof_gr_complex, n)
    head.set_min_output_buffer(BUFFER)
    stft = rfdetect.stft_tile(fft_size=fft_size, hop=hop)
    if kernel != "auto":
        stft.engine = SpectrogramEngine(stft.params, kernel=kernel)
    snk = blocks.null_sink(gr.sizeof_float * stft.params.width)
    tb.connect(src, head, stft, snk)
    t = time.perf_counter()
    tb.run()
    return n / (time.perf_counter() - t) / 1e6


def run_native(x, n, fft_size):
    tb = gr.top_block()
    src = blocks.vector_source_c(x, True)
    src.set_min_output_buffer(BUFFER)
    head = blocks.head(gr.sizeof_gr_complex, n)
    head.set_min_output_buffer(BUFFER)
    s2v = blocks.stream_to_vector(gr.sizeof_gr_complex, fft_size)
    f = fft.fft_vcc(fft_size, True, window.hann(fft_size), True, 1)
    mag = blocks.complex_to_mag_squared(fft_size)
    log = blocks.nlog10_ff(10, fft_size, 0)
    snk = blocks.null_sink(gr.sizeof_float * fft_size)
    tb.connect(src, head, s2v, f, mag, log, snk)
    t = time.perf_counter()
    tb.run()
    return n / (time.perf_counter() - t) / 1e6


def engine_table(fft_size, hop, repeats, n_rows=2048):
    """Rows from a buffer in memory: the kernels' own speed, without GNU Radio."""
    p = SpectrogramParams(fft_size=fft_size, hop=hop)
    x = noise(n_rows * hop + p.history)
    out = np.empty((n_rows, p.width), np.float32)
    lines = ["| engine alone, hop %d | threads | median MS/s | spread | us per row per thread |" % hop,
             "|---|---|---|---|---|"]
    for kernel in ("compiled", "numpy"):
        for threads in (1, 2):
            eng = SpectrogramEngine(p, threads=threads, kernel=kernel)
            eng.compute(x, n_rows, out)  # plans, buffers
            rates = []
            for _ in range(repeats):
                t = time.perf_counter()
                eng.compute(x, n_rows, out)
                rates.append(n_rows * hop / (time.perf_counter() - t) / 1e6)
            med, spread = med_spread(rates)
            lines.append(f"| {kernel} | {threads} | {med:.1f} | {spread} | {hop / med * threads:.2f} |")
            eng.close()
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=float, default=100e6)
    ap.add_argument("--repeats", type=int, default=11)
    ap.add_argument("--fft-size", type=int, default=4096)
    ap.add_argument("--no-write", action="store_true", help="do not update docs/performance.md")
    a = ap.parse_args()
    n = int(a.samples)
    x = noise()
    half = a.fft_size // 2
    cases = {f"STFT Tile, hop {half} (50 % overlap)": lambda: run_ours(x, n, a.fft_size, half),
             f"STFT Tile, hop {half}, NumPy kernel": lambda: run_ours(x, n, a.fft_size, half, "numpy"),
             f"STFT Tile, hop {a.fft_size} (no overlap)": lambda: run_ours(x, n, a.fft_size, a.fft_size),
             "GNU Radio fft_vcc chain (no overlap)": lambda: run_native(x, n, a.fft_size)}
    results = {k: [] for k in cases}
    order = list(cases)
    for r in range(a.repeats):
        for k in order[r % len(order):] + order[:r % len(order)]:  # no case always first
            results[k].append(cases[k]())
    native = results["GNU Radio fft_vcc chain (no overlap)"]
    base = statistics.median(native)
    rows = ["| flowgraph | median MS/s | spread (min-max) | ratio of medians | median of per-round ratios (quartiles) |",
            "|---|---|---|---|---|"]
    for k, v in results.items():
        med = statistics.median(v)
        # each round's run over the native run of the same round: the machine's drift
        # between rounds cancels
        paired = [ours / nat for ours, nat in zip(v, native)]
        q1, q2, q3 = statistics.quantiles(paired, n=4) if len(paired) > 1 else paired * 3
        rows.append(f"| {k} | {med:.1f} | {min(v):.1f}-{max(v):.1f} | {med / base:.2f}x | "
                    f"{statistics.median(paired):.2f}x ({q1:.2f}-{q3:.2f}) |")
    rows += ["", engine_table(a.fft_size, half, a.repeats)]
    table = "\n".join(rows)
    header = stamp(f"fft {a.fft_size}, {n / 1e6:.0f} M samples per run, {a.repeats} runs each")
    print(header)
    print(table)
    if not a.no_write:
        write_section("performance.md", "bench/stft.py", header, table)

if __name__ == "__main__":
    main()
