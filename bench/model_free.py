#!/usr/bin/env python3
"""Cost of the model-free detectors beside ``narrowband`` (``pulse``, ``carrier``) per second of
a VHF/UHF capture, and of the array steps rewritten for it against SciPy's and NumPy's own.

    nice -n 10 .venv/bin/python bench/model_free.py [--rate 2.4e6] [--seconds 4] [--repeats 7] [--no-write]

The capture: ``rfdetect synth --profile vhf-uhf``'s 10 M samples (seed 4, cached in bench/.cache),
declared at --rate as bench/realtime.py does. Each detector runs on the tiles its branch of ``rfdetect detect`` and the IQ Detector
gets (``pulse``: PULSE_TILE_ROWS rows of its own grid; ``carrier``: the networks' 1024), and on
1024-row tiles for ``pulse`` (its tile height before session 46); overlap 128 rows. A cell is
the median over --repeats passes of the CPU seconds one thread spends in ``detect()`` per
second of signal. It leaves out what a Detector does per tile around ``detect()`` (records,
messages, the merge), which taller tiles cut: bench/realtime.py measures the whole. The steps: each rewritten one against the call it replaced, on the
array it gets in a detector (random values, one 1024-row tile), median ms over --repeats;
the outputs are checked equal before timing (tests/test_carrier_detector.py and
tests/test_pulse_detector.py check the same); the compiled contrast kernel (session 47) against
its NumPy reference, per tile over the capture's tiles of ``pulse``'s branch, equal to
CONTRAST_TOLERANCE, and ``pulse``'s cost per second with NumPy's contrast beside the kernel's;
likewise ``carrier``'s compiled power maps (session 48), to POWER_TOLERANCE, and its compiled
regions (session 49), the same labels and boxes.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import scipy.ndimage as ndi

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_report import stamp, write_section  # noqa: E402
from live_run import base_recording  # noqa: E402

from gnuradio.rfdetect.dsp.spectrogram import SpectrogramEngine  # noqa: E402
from gnuradio.rfdetect.formats.sigmf_io import SigMFRecording  # noqa: E402
from gnuradio.rfdetect.inference.carrier_detector import CARRIER_SPECTROGRAM, POWER_TOLERANCE, CarrierDetector, \
    _closed_3x3, _running_mean_down  # noqa: E402
from gnuradio.rfdetect.inference.carrier_detector import kernel_takes as carrier_kernel_takes  # noqa: E402
from gnuradio.rfdetect.inference.pulse_detector import CONTRAST_TOLERANCE, FLOOR_ROWS, PULSE_SPECTROGRAM, \
    PULSE_TILE_ROWS, PulseDetector, _column_medians, _kernel_takes  # noqa: E402

OVERLAP = 128


def tiles_of(rows: np.ndarray, height: int) -> list:
    step = height - OVERLAP
    return [rows[i:i + height] for i in range(0, max(len(rows) - height, 0) + 1, step)]


def cost_per_second(detector, tiles: list, seconds: float, repeats: int) -> float:
    """Median CPU seconds of detect() over the tiles, per second of signal."""
    runs = []
    for _ in range(repeats):
        t = time.process_time()
        for tile in tiles:
            detector.detect(tile)
        runs.append((time.process_time() - t) / seconds)
    return statistics.median(runs)


def kernel_step(name: str, tiles: list, takes, compiled, reference, tolerance: float) -> tuple:
    """A compiled kernel's step against its NumPy reference, per tile over the capture's
    ``tiles`` (one tile timed again and again stays in cache, which flatters NumPy's passes
    over it and its temporaries), as ``steps`` holds them; first every tile must be one the
    kernel ``takes`` (else its row would time NumPy too), and each output equal the
    reference's to ``tolerance`` (float32 rounding, not bit for bit; 0: the same values)."""
    if not all(takes(t) for t in tiles):
        raise SystemExit(f"{name}: some tiles of the capture go to NumPy's path: the kernel's row would time "
                         "NumPy too")
    for t in tiles:
        for got, want in zip(compiled(t), reference(t)):
            if np.shape(got) != np.shape(want) or not np.allclose(got, want, rtol=tolerance, atol=0):
                raise SystemExit(f"{name}: the compiled kernel differs from NumPy's by more than {tolerance}")
    match = "the same values" if tolerance == 0 else "to float32 rounding"
    return (f"{name}, per tile over the capture's {len(tiles)} (compiled kernel, {match})",
            lambda: [compiled(t) for t in tiles], lambda: [reference(t) for t in tiles], len(tiles))


def region_arrays(found: tuple) -> tuple:
    """``CarrierDetector._regions``'s (labels, [(label, rows, columns)]) as two arrays."""
    labels, regions = found
    return labels, np.array([(i, ys.start, ys.stop, xs.start, xs.stop) for i, ys, xs in regions]).reshape(-1, 5)


def step_ms(call, repeats: int) -> float:
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        call()
        runs.append((time.perf_counter() - t) * 1e3)
    return statistics.median(runs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rate", type=float, default=2.4e6)
    ap.add_argument("--seconds", type=float, default=4.0, help="seconds of the capture to run")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    rec = SigMFRecording.open(base_recording(profile="vhf-uhf"))
    n = min(int(a.seconds * a.rate), rec.n_samples)
    x = rec.read(0, n)
    seconds = n / a.rate
    rows = {}
    for grid in (PULSE_SPECTROGRAM, CARRIER_SPECTROGRAM):
        engine = SpectrogramEngine(grid, threads=1)
        rows[grid] = engine.compute(x, (n - grid.history) // grid.hop)
        engine.close()
    pulse, carrier = PulseDetector(kernel="compiled"), CarrierDetector(kernel="compiled")
    numpy_carrier = CarrierDetector(kernel="numpy")
    for det in (pulse, carrier, numpy_carrier):
        det.set_sample_rate(a.rate)
    numpy_pulse = PulseDetector(kernel="numpy")
    numpy_pulse.set_sample_rate(a.rate)
    setups = [("pulse", pulse, PULSE_SPECTROGRAM, 1024, "the networks' (pulse's branch's before session 46)"),
              ("pulse", pulse, PULSE_SPECTROGRAM, PULSE_TILE_ROWS, "pulse's branch's"),
              ("pulse, NumPy contrast", numpy_pulse, PULSE_SPECTROGRAM, PULSE_TILE_ROWS,
               "pulse's branch's, NumPy's contrast (the kernel's reference and fallback)"),
              ("carrier", carrier, CARRIER_SPECTROGRAM, 1024, "carrier's branch's (the networks')"),
              ("carrier, NumPy power maps and regions", numpy_carrier, CARRIER_SPECTROGRAM, 1024,
               "carrier's branch's, NumPy's and SciPy's power maps and regions (the kernel's reference and "
               "fallback)")]
    table = ["| detector | tile rows | tiles | detect() CPU s per s of signal (median) | tile height |",
             "|---|---|---|---|---|"]
    for name, det, grid, height, note in setups:
        tiles = tiles_of(rows[grid], height)
        # the tiles cover (len - overlap) rows of the signal each, the first all of its rows
        covered = (len(tiles) * (height - OVERLAP) + OVERLAP) * grid.hop / a.rate
        cost = cost_per_second(det, tiles, covered, a.repeats)
        table.append(f"| {name} | {height} | {len(tiles)} | {cost:.3f} | {note} |")
        print(table[-1], flush=True)

    rng = np.random.default_rng(0)
    wide = rng.random((1024, CARRIER_SPECTROGRAM.width), dtype=np.float32) ** 3 * 1e3
    mask = wide > np.median(wide)
    narrow = rng.random((FLOOR_ROWS, PULSE_SPECTROGRAM.width), dtype=np.float32) ** 3 * 1e3  # one floor block
    # (step, the rewritten call, the call it replaced, calls each makes: ms are per call)
    steps = [
        ("carrier: 8-row running mean, 1024 x 4096", lambda: _running_mean_down(wide, 8),
         lambda: ndi.uniform_filter1d(wide, 8, axis=0, mode="nearest"), 1),
        ("carrier: 3 x 3 closing, 1024 x 4096", lambda: _closed_3x3(mask),
         lambda: ndi.binary_closing(mask, structure=np.ones((3, 3), bool)), 1),
        (f"pulse: column medians, {FLOOR_ROWS} x 32", lambda: _column_medians(narrow),
         lambda: np.median(narrow, axis=0), 1),
    ]
    for name, new, old, _ in steps:
        if not np.array_equal(new(), old()):
            raise SystemExit(f"{name}: the rewritten step's output differs from the call it replaced")
    long_gap = pulse._rows()[1]
    steps.append(kernel_step(f"pulse: contrast map, {PULSE_TILE_ROWS} x 32",
                             tiles_of(rows[PULSE_SPECTROGRAM], PULSE_TILE_ROWS), _kernel_takes,
                             lambda t: pulse._contrast(t, long_gap),
                             lambda t: numpy_pulse._contrast(t, long_gap), CONTRAST_TOLERANCE))
    carrier_tiles = [np.ascontiguousarray(t, np.float32) for t in tiles_of(rows[CARRIER_SPECTROGRAM], 1024)]
    steps.append(kernel_step(f"carrier: power maps, 1024 x {CARRIER_SPECTROGRAM.width}", carrier_tiles,
                             carrier_kernel_takes, carrier._power, numpy_carrier._power, POWER_TOLERANCE))
    steps.append(kernel_step(f"carrier: regions (mask, 3 x 3 closing, labels, boxes), 1024 x "
                             f"{CARRIER_SPECTROGRAM.width}", [numpy_carrier._power(t)[1] for t in carrier_tiles],
                             lambda smooth: True, lambda smooth: region_arrays(carrier._regions(smooth)),
                             lambda smooth: region_arrays(numpy_carrier._regions(smooth)), 0))
    table += ["", "| step | rewritten ms | SciPy / NumPy ms | speed-up |", "|---|---|---|---|"]
    for name, new, old, calls in steps:
        t_new, t_old = step_ms(new, a.repeats) / calls, step_ms(old, a.repeats) / calls
        table.append(f"| {name} | {t_new:.1f} | {t_old:.1f} | {t_old / t_new:.1f}x |")
        print(table[-1], flush=True)
    header = stamp(f"model-free detectors on a {a.rate / 1e6:g} MS/s vhf-uhf capture ({seconds:.2f} s), one thread")
    print(header)
    if not a.no_write:
        write_section("performance.md", "bench/model_free.py", header, "\n".join(table))


if __name__ == "__main__":
    main()
