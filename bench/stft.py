#!/usr/bin/env python3
"""STFT Tile block vs GNU Radio's own fft chain, same machine, same run.

    .venv/bin/python bench/stft.py [--samples 100e6] [--repeats 11]

Flowgraph A: vector_source_c (noise, repeating) -> head -> rfdetect.stft_tile(4096, hop) -> null_sink
             (the C++ block, gr-rfdetect/lib/stft_tile_impl.cc, with the default normalisation
             running_floor and, to show what tracking the floor costs, with "floor"; for
             comparison also the Python block it replaced on the CPU, PyStftTile, with the
             same compiled kernel)
Flowgraph B: vector_source_c -> head -> stream_to_vector(4096) -> fft_vcc(4096, Hann, shift, nthreads)
             -> complex_to_mag_squared(4096) -> nlog10_ff(4096) -> null_sink   (no overlap)

Each flowgraph runs twice over:
  "large" buffers: the vector source and the head get a 2 M-sample output buffer (what the
           STFT Tile's documentation asks of the block before it; the SigMF Source sets it);
  "default" buffers: GNU Radio's default everywhere (what a source that does not set it gives).
The native chain runs with fft_vcc at nthreads=1 and nthreads=2, so that the STFT Tile (up to
2 threads) is compared with it at its best thread count too: per buffer setting, "best" is the
thread count with the higher median in this run. The issue 15 target: the C++ STFT Tile at
hop 2048 with default buffers >= 1.25x the chain's best at default buffers.

Runs alternate (every round runs every case, in a rotated order) so that the shared machine's
drift hits all cases; each ratio is taken per round (a run over the native run of the same
round and buffer setting) and reported as the median of the rounds with its quartiles. Then
the engine alone (rows from a buffer in memory, no flowgraph: the pybind11 kernel, which the
C++ block runs too, and the NumPy kernel) and the FFT alone (a 32 x 4096
batch: FFTW as the NumPy kernel plans it, FFTW as the compiled kernel's library plans it,
each with FFTW_ESTIMATE and FFTW_MEASURE, and SciPy's pocketfft). Rewrites the tables in
docs/performance.md unless --no-write.
"""
import argparse
import os
import ctypes
import ctypes.util
import statistics
import time

import numpy as np
import scipy.fft
from gnuradio import blocks, fft, gr
from gnuradio.fft import window

from gnuradio import rfdetect
from gnuradio.rfdetect.blocks.stft_tile import PyStftTile, native_block
from gnuradio.rfdetect.dsp.spectrogram import SpectrogramEngine, SpectrogramParams

from bench_report import med_spread, stamp, write_section

# the upstream buffer the STFT Tile's documentation asks for (samples)
BUFFER = 1 << 21


def noise(n=1 << 20):
    rng = np.random.default_rng(0)
    return (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(np.complex64)


def _source(x, n, large):
    src = blocks.vector_source_c(x, True)
    head = blocks.head(gr.sizeof_gr_complex, n)
    if large:
        src.set_min_output_buffer(BUFFER)
        head.set_min_output_buffer(BUFFER)
    return src, head


def run_ours(x, n, fft_size, hop, large=True, python_block=False, normalisation=None):
    tb = gr.top_block()
    src, head = _source(x, n, large)
    if python_block:  # the Python block the C++ one replaced on the CPU, same kernel
        p = SpectrogramParams(fft_size=fft_size, hop=hop)
        stft = PyStftTile(p, engine=SpectrogramEngine(p, kernel="compiled"))
    else:
        stft = rfdetect.stft_tile(fft_size=fft_size, hop=hop, device="cpu",
                                  normalisation=normalisation or SpectrogramParams().normalisation)
        assert isinstance(stft, native_block())
    snk = blocks.null_sink(gr.sizeof_float * stft.params.width)
    tb.connect(src, head, stft, snk)
    t = time.perf_counter()
    tb.run()
    return n / (time.perf_counter() - t) / 1e6


def run_native(x, n, fft_size, nthreads=1, large=True):
    tb = gr.top_block()
    src, head = _source(x, n, large)
    s2v = blocks.stream_to_vector(gr.sizeof_gr_complex, fft_size)
    f = fft.fft_vcc(fft_size, True, window.hann(fft_size), True, nthreads)
    mag = blocks.complex_to_mag_squared(fft_size)
    log = blocks.nlog10_ff(10, fft_size, 0)
    snk = blocks.null_sink(gr.sizeof_float * fft_size)
    tb.connect(src, head, s2v, f, mag, log, snk)
    t = time.perf_counter()
    tb.run()
    return n / (time.perf_counter() - t) / 1e6


def engine_table(fft_size, hop, repeats, n_rows=2048):
    """Rows from a buffer in memory: the kernels' own speed, without GNU Radio. Rounds
    alternate between the kernels as the flowgraph rounds do."""
    p = SpectrogramParams(fft_size=fft_size, hop=hop)
    x = noise(n_rows * hop + p.history)
    out = np.empty((n_rows, p.width), np.float32)
    engines = {(kernel, threads): SpectrogramEngine(p, threads=threads, kernel=kernel)
               for kernel in ("compiled", "numpy") for threads in (1, 2)}
    for eng in engines.values():
        eng.compute(x, n_rows, out)  # plans, buffers
    rates = {k: [] for k in engines}
    order = list(engines)
    for r in range(repeats):
        for k in order[r % len(order):] + order[:r % len(order)]:
            t = time.perf_counter()
            engines[k].compute(x, n_rows, out)
            rates[k].append(n_rows * hop / (time.perf_counter() - t) / 1e6)
    lines = [f"| engine alone, hop {hop} (compiled: the pybind11 kernel, the C++ block's code) | threads | median MS/s | spread | us per row per thread "
             "| per round / NumPy kernel, same threads: median (quartiles) |",
             "|---|---|---|---|---|---|"]
    for (kernel, threads), v in rates.items():
        med, spread = med_spread(v)
        vs_numpy = _ratio([a / b for a, b in zip(v, rates[("numpy", threads)])])
        lines.append(f"| {kernel} | {threads} | {med:.1f} | {spread} | {hop / med * threads:.2f} | {vs_numpy} |")
    for eng in engines.values():
        eng.close()
    return "\n".join(lines)


class _SystemFftw:
    """A batch of out-of-place single-precision FFTs through the system libfftw3f (the
    library the compiled kernel links), via ctypes: one execute call per batch."""

    def __init__(self, fft_size, batch, flag):
        lib = ctypes.CDLL(ctypes.util.find_library("fftw3f") or "libfftw3f.so.3")
        lib.fftwf_plan_many_dft.restype = ctypes.c_void_p
        lib.fftwf_plan_many_dft.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.c_int,
                                            ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
                                            ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
                                            ctypes.c_int, ctypes.c_uint]
        lib.fftwf_execute.argtypes = [ctypes.c_void_p]
        lib.fftwf_destroy_plan.argtypes = [ctypes.c_void_p]
        self.lib = lib
        self.inp = np.zeros((batch, fft_size), np.complex64)
        self.out = np.zeros((batch, fft_size), np.complex64)
        n = (ctypes.c_int * 1)(fft_size)
        flags = {"FFTW_ESTIMATE": 1 << 6, "FFTW_MEASURE": 0}[flag]
        self.plan = lib.fftwf_plan_many_dft(1, n, batch, self.inp.ctypes.data, None, 1, fft_size,
                                            self.out.ctypes.data, None, 1, fft_size, -1, flags)
        if not self.plan:
            raise RuntimeError("libfftw3f could not plan")

    def __call__(self, x):
        self.inp[:] = x  # MEASURE overwrites the arrays while planning
        self.lib.fftwf_execute(self.plan)

    def close(self):
        self.lib.fftwf_destroy_plan(self.plan)


def fft_table(fft_size, repeats, batch=32, calls=200):
    """The FFT alone, one thread, a batch of ``batch`` frames (the NumPy kernel's batch)."""
    import pyfftw
    x = noise(batch * fft_size).reshape(batch, fft_size)
    cases = {}
    for flag in ("FFTW_ESTIMATE", "FFTW_MEASURE"):
        a = pyfftw.empty_aligned((batch, fft_size), dtype="complex64")
        b = pyfftw.empty_aligned((batch, fft_size), dtype="complex64")
        plan = pyfftw.FFTW(a, b, axes=(-1,), threads=1, flags=(flag,))

        def run(plan=plan, a=a):
            a[:] = x
            plan()
        cases[f"pyfftw's FFTW (NumPy kernel), {flag}"] = run
    for flag in ("FFTW_ESTIMATE", "FFTW_MEASURE"):
        sysfft = _SystemFftw(fft_size, batch, flag)
        cases[f"system libfftw3f (compiled kernel's library), {flag}"] = lambda s=sysfft: s(x)
    cases["SciPy pocketfft (scipy.fft.fft)"] = lambda: scipy.fft.fft(x, axis=-1, workers=1)
    times = {k: [] for k in cases}
    order = list(cases)
    for r in range(repeats):
        for k in order[r % len(order):] + order[:r % len(order)]:
            cases[k]()  # warm
            t = time.perf_counter()
            for _ in range(calls):
                cases[k]()
            times[k].append((time.perf_counter() - t) / calls / batch * 1e6)
    pocket = times["SciPy pocketfft (scipy.fft.fft)"]
    lines = [f"| FFT alone, {batch} x {fft_size} complex64 batch, 1 thread (includes copying the batch in) "
             "| median us per FFT | spread | pocketfft time / this time, per round: median (quartiles) |",
             "|---|---|---|---|"]
    for k, v in times.items():
        med, spread = med_spread(v, "{:.2f}")
        lines.append(f"| {k} | {med:.2f} | {spread} | {_ratio([p / t for p, t in zip(pocket, v)])} |")
    return "\n".join(lines)


def _ratio(paired):
    q1, _, q3 = statistics.quantiles(paired, n=4) if len(paired) > 1 else paired * 3
    return f"{statistics.median(paired):.2f}x ({q1:.2f}-{q3:.2f})"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=float, default=100e6)
    ap.add_argument("--repeats", type=int, default=11)
    ap.add_argument("--fft-size", type=int, default=4096)
    ap.add_argument("--no-write", action="store_true", help="do not update docs/performance.md")
    a = ap.parse_args()
    n = int(a.samples)
    x = noise()
    N, half = a.fft_size, a.fft_size // 2
    # (buffers, flowgraph) -> one run's MS/s
    cases = {
        ("large", f"C++ STFT Tile, hop {half} (50 % overlap)"): lambda: run_ours(x, n, N, half),
        ("large", f"C++ STFT Tile, hop {half}, floor of each row"):
            lambda: run_ours(x, n, N, half, normalisation="floor"),
        ("large", f"Python STFT Tile (before), hop {half}"): lambda: run_ours(x, n, N, half, python_block=True),
        ("large", f"C++ STFT Tile, hop {N} (no overlap)"): lambda: run_ours(x, n, N, N),
        ("large", "fft_vcc chain, nthreads=1 (no overlap)"): lambda: run_native(x, n, N, 1),
        ("large", "fft_vcc chain, nthreads=2 (no overlap)"): lambda: run_native(x, n, N, 2),
        ("default", f"C++ STFT Tile, hop {half} (50 % overlap)"): lambda: run_ours(x, n, N, half, large=False),
        ("default", f"C++ STFT Tile, hop {half}, floor of each row"):
            lambda: run_ours(x, n, N, half, large=False, normalisation="floor"),
        ("default", f"Python STFT Tile (before), hop {half}"):
            lambda: run_ours(x, n, N, half, large=False, python_block=True),
        ("default", "fft_vcc chain, nthreads=1 (no overlap)"): lambda: run_native(x, n, N, 1, large=False),
        ("default", "fft_vcc chain, nthreads=2 (no overlap)"): lambda: run_native(x, n, N, 2, large=False),
    }
    load_before = os.getloadavg()
    results = {k: [] for k in cases}
    order = list(cases)
    for r in range(a.repeats):
        for k in order[r % len(order):] + order[:r % len(order)]:  # no case always first
            results[k].append(cases[k]())
    native = {(buf, th): results[(buf, f"fft_vcc chain, nthreads={th} (no overlap)")]
              for buf in ("large", "default") for th in (1, 2)}
    best = {buf: max((1, 2), key=lambda th: statistics.median(native[(buf, th)])) for buf in ("large", "default")}
    rows = ["| buffers | flowgraph | median MS/s | spread (min-max) | per round / fft_vcc nthreads=1, same buffers: "
            "median (quartiles) | per round / fft_vcc at its best thread count, same buffers: median (quartiles) |",
            "|---|---|---|---|---|---|"]
    for (buf, name), v in results.items():
        # each round's run over the native run of the same round: the machine's drift
        # between rounds cancels
        one = _ratio([ours / nat for ours, nat in zip(v, native[(buf, 1)])])
        top = _ratio([ours / nat for ours, nat in zip(v, native[(buf, best[buf])])])
        label = "large (2 M samples)" if buf == "large" else "GNU Radio default"
        rows.append(f"| {label} | {name} | {statistics.median(v):.1f} | {min(v):.1f}-{max(v):.1f} | {one} | {top} |")
    load_after = os.getloadavg()
    target = [ours / nat for ours, nat in zip(results[("default", f"C++ STFT Tile, hop {half} (50 % overlap)")],
                                               native[("default", best["default"])])]
    rows += ["", f"Target (issue 15): C++ STFT Tile at hop {half}, GNU Radio default buffers, over the fft_vcc "
             f"chain at its best thread count, default buffers: {_ratio(target)} per round (target >= 1.25x).",
             "", f"Best fft_vcc thread count in this run (higher median): large buffers nthreads={best['large']}, "
             f"default buffers nthreads={best['default']}. \"large\": 2 M-sample output buffers on the vector "
             "source and the head; \"GNU Radio default\": no buffer set on any block (the C++ STFT Tile has "
             "history fft_size-hop+1 and asks for a 1024-row output buffer of its own; the Python block asks for "
             "a 262k-sample history). Load average (1, 5, 15 min) before the flowgraph rounds: "
             f"{', '.join(f'{v:.2f}' for v in load_before)}; after: {', '.join(f'{v:.2f}' for v in load_after)}."]
    rows += ["", engine_table(a.fft_size, half, a.repeats), "", fft_table(a.fft_size, a.repeats),
             "", f"Load average at the end: {', '.join(f'{v:.2f}' for v in os.getloadavg())} (2 cores, shared)."]
    table = "\n".join(rows)
    header = stamp(f"fft {a.fft_size}, {n / 1e6:.0f} M samples per run, {a.repeats} rounds")
    print(header)
    print(table)
    if not a.no_write:
        write_section("performance.md", "bench/stft.py", header, table)


if __name__ == "__main__":
    main()
