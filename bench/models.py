#!/usr/bin/env python3
"""Inference cost of every architecture and model: ms per tile per backend, file size,
parameters; and several models on one tile.

    nice -n 10 .venv/bin/python bench/models.py [--model NAME=SPEC ...] [--no-default-models]
                                                [--arch ARCH[:BACKBONE] ...] [--repeats 20]
                                                [--warmup 3] [--no-concurrency] [--no-write] [--gpu-only]

Models, all on one real 1024 x 1024 tile (default spectrogram, a synthetic recording with
signals, 10 MS/s):
  default     the embedded model (ONNX)
  energy      the model-free detector (NumPy/SciPy)
  ARCH (random weights)
              every architecture of training/archs.py ARCHS (anchor_free, two_stage, dense,
              faster_rcnn; --arch picks others or other backbones), built untrained, exported
              by this script to ONNX and, where torch.export captures it, to .pt, with a card.
              A network's cost does not depend on its weights; what follows it can:
              anchor_free and dense decode the cells over the score threshold (random weights
              leave few: the objectness prior is 0.01), two_stage classifies one crop per
              energy proposal, so its time grows with the number of proposals on the tile
              (given in the table); Faster R-CNN's RPN keeps its top-N proposals whatever the
              weights.
  --model NAME=SPEC
              any model the Detector loads (a folder from `rfdetect-train run`, a .onnx or .pt
              with its card), e.g. --model anchor_free=/path/to/model_dir

Each cell: median ms of the model's detect() on the tile (what the Detector times per tile:
network, decode, NMS; two_stage also its energy proposals), and the quartiles, over
--repeats runs after --warmup runs. The setups take turns (one run each per round) so that
load from other work on a shared machine falls on all of them alike; a setup slower than
--slow-ms per run (Faster R-CNN on a CPU) runs alone afterwards, --repeats times or as many
as fit in --cap-s seconds (at least 5; the cell gives n= when fewer). Backends: ONNX Runtime on the CPU with 1 and with 2
intra-op threads (the Detector uses 1 per model, so that models run side by side), and the
best of the two; PyTorch on the CPU (the .pt export, the Detector's PyTorch backend) with 1
and 2 threads. With --gpu-only, on a machine with a GPU, instead: PyTorch CUDA FP32/FP16 and
ONNX Runtime CUDA per model, the models that have a .pt side by side on the GPU (one CUDA
stream each), and the GPU STFT against the CPU kernel, with where its time goes; into its own
section of docs/performance.md.
Parameters are counted in the ONNX graph (its initializers).

A second table runs three models on one tile one after another and side by side (the
Detector's `concurrency`). Rewrites its section of docs/performance.md unless --no-write.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_report import git_commit, med_spread, named_models, stamp, write_section  # noqa: E402

from gnuradio.rfdetect.inference.hardware_profile import PROFILES  # noqa: E402
from gnuradio.rfdetect.inference.model_runtime import ModelCard, ModelSpec, card_for, load_model  # noqa: E402
from gnuradio.rfdetect.formats.sigmf_io import SigMFRecording  # noqa: E402
from gnuradio.rfdetect.dsp.spectrogram import SpectrogramEngine, SpectrogramParams, spectrogram  # noqa: E402
from gnuradio.rfdetect.apps.synth import synth_dataset  # noqa: E402
from gnuradio.rfdetect.inference.tile_detector import TileDetector  # noqa: E402

PARAMS = SpectrogramParams()
HEIGHT = 1024
LABELS = ["ofdm", "fhss", "rb", "chirp", "tone"]
REPEATS = 20  # runs per cell (--repeats); a cell with fewer says so


def real_tile(workdir: Path) -> np.ndarray:
    """A 1024-row tile of a synthetic recording with signals (10 MS/s)."""
    (path,) = synth_dataset(workdir / "rec", n=1, seed=4, sample_rate=10e6, duration=0.22, n_signals=10)
    rec = SigMFRecording.open(path)
    iq = rec.read(0, rec.n_samples)
    return spectrogram(iq, PARAMS)[:HEIGHT].copy()


def export_random(workdir: Path, arch_name: str, backbone: str | None, tile: np.ndarray) -> tuple[Path, str]:
    """An untrained network of one architecture as model.onnx (+ model.pt where
    torch.export captures it) + card, the way rfdetect-train exports a trained one."""
    import torch
    from gnuradio.rfdetect.inference.backends import save_torch_program
    from rfdetect_training.archs import make_arch
    from rfdetect_training.export import ONNX_OPSET
    arch = make_arch(arch_name, LABELS, backbone, PARAMS, HEIGHT)
    torch.manual_seed(0)
    module = arch.export_module(arch.build().eval()).eval()
    inputs = arch.example_inputs(tile)
    d = workdir / f"{arch.name}-{arch.backbone}"
    d.mkdir()
    with warnings.catch_warnings():  # the TorchScript exporter is what rfdetect-train uses too
        warnings.simplefilter("ignore")
        torch.onnx.export(module, inputs, str(d / "model.onnx"), input_names=arch.input_names,
                          output_names=arch.output_names, dynamic_axes=arch.dynamic_axes,
                          opset_version=ONNX_OPSET, dynamo=False)
    note = ""
    if arch.torch_exportable:
        try:
            save_torch_program(module, inputs, d / "model.pt", arch.input_names, arch.output_names,
                               dynamic_batch=bool(arch.dynamic_axes) and arch.input_names[0] in arch.dynamic_axes)
        except Exception as e:  # noqa: BLE001 (torch.export raises many types)
            note = f"no .pt: torch.export failed, {type(e).__name__}"
    else:
        note = "no .pt: torch.export cannot capture it"
    ModelCard(name=f"{arch.name}-{arch.backbone}", labels=LABELS, input_shape=[1, 1, HEIGHT, PARAMS.width],
              spectrogram=PARAMS, output_format=arch.output_format, score_threshold=0.5, nms_iou=0.5,
              extra=arch.card_extra()).save(card_for(d / "model.onnx"))
    return d, note


def onnx_facts(path: Path) -> tuple[float, int | None]:
    """(file MB, parameters in the graph's initializers)."""
    mb = path.stat().st_size / 1e6
    try:
        import onnx
        g = onnx.load(str(path), load_external_data=False).graph
        return mb, int(sum(int(np.prod(i.dims)) for i in g.initializer))
    except Exception:  # noqa: BLE001 (no onnx package, or a file it cannot read)
        return mb, None


def time_ms(fn, repeats: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1e3)
    return out


def quart(ms: list[float]) -> tuple[float, float, float]:
    q1, q2, q3 = statistics.quantiles(ms, n=4, method="inclusive")
    return q1, q2, q3


def cell(ms) -> str:
    if not ms:
        return "-"
    q1, q2, q3 = quart(ms)
    return f"{q2:.1f} ({q1:.1f}-{q3:.1f})" + (f" n={len(ms)}" if len(ms) < REPEATS else "")


def cuda_available() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except ImportError:
        return False


def load_on(spec: str, backend: str, threads: int = 1, device: str = "cpu", precision: str = "fp32"):
    """A model on one backend; `threads` intra-op threads on the CPU (the Detector uses 1)."""
    from gnuradio.rfdetect.inference.backends import OnnxBackend, TorchBackend
    m = load_model(spec, PARAMS, HEIGHT, profile=PROFILES["cpu"].with_overrides(backend, device, precision))
    b = getattr(m, "backend", None)
    if b is None:
        return m
    if b.kind != backend or b.device != device:
        raise RuntimeError(f"ran on {b.kind}/{b.device} instead")
    if threads != 1 and device == "cpu":
        cls = OnnxBackend if backend == "onnxruntime" else TorchBackend
        m.backend = cls(b.path, device, precision, intra_threads=threads)
    return m


def with_option(spec: str, key: str, value: str) -> str:
    return f"{spec}{'&' if '?' in spec else '?'}{key}={value}"


def setups(name: str, spec: str, info: dict, tile) -> tuple[dict, list]:
    """-> (facts of one model, its timing setups: (result, key, before, run)); every CPU
    backend and thread count it loads on."""
    r = {"name": name, **info, "times": {}}
    if ModelSpec.parse(spec).model == "energy":
        m = load_model(spec, PARAMS, HEIGHT)
        r["boxes"] = len(m.detect(tile))
        return r, [(r, "numpy", None, lambda: m.detect(tile))]
    out = []
    for backend in ("onnxruntime", "pytorch"):
        for threads in (1, 2):
            key = f"{backend}/{threads}"
            try:
                m = load_on(spec, backend, threads)
            except Exception as e:  # noqa: BLE001 (a format this model lacks)
                r["skipped"] = {**r.get("skipped", {}), backend: str(e).splitlines()[0][:120]}
                print(f"  {name} {key}: skipped ({r['skipped'][backend]})", flush=True)
                break
            if backend == "onnxruntime" and "file_mb" not in r:
                r["file_mb"], r["params"] = onnx_facts(Path(m.backend.path))
                r["boxes"] = len(m.detect(tile))
                if getattr(m, "format", "") == "crop_classifier/1":
                    r["proposals"] = len(m.proposer.detect(np.ascontiguousarray(tile)))
            before = None
            if backend == "pytorch":  # PyTorch's thread count is global: set it before each run
                import torch
                before = (lambda t=threads: torch.set_num_threads(t))
            out.append((r, key, before, lambda m=m: m.detect(tile)))
    return r, out


def run_all(all_setups: list, repeats: int, warmup: int, slow_ms: float, cap_s: float) -> None:
    """Times every setup. Setups faster than ``slow_ms`` per run take turns, one run each
    per round, for ``repeats`` rounds (so that load from other work on a shared machine
    falls on all of them alike); slower ones run on their own afterwards, ``repeats``
    times or as many as fit in ``cap_s`` seconds (at least 5; the table gives the count)."""
    calib = {}
    for i, (r, key, before, fn) in enumerate(all_setups):
        for _ in range(max(1, warmup)):
            if before:
                before()
            t = time.perf_counter()
            fn()
            calib[i] = (time.perf_counter() - t) * 1e3
            if calib[i] > slow_ms:
                break  # one warm-up run is enough for a slow one
    fast = [i for i in calib if calib[i] <= slow_ms]
    for i in fast:
        all_setups[i][0]["times"][all_setups[i][1]] = []
    for _ in range(repeats):
        for i in fast:
            r, key, before, fn = all_setups[i]
            if before:
                before()
            t = time.perf_counter()
            fn()
            r["times"][key].append((time.perf_counter() - t) * 1e3)
    for i in (i for i in calib if calib[i] > slow_ms):
        r, key, before, fn = all_setups[i]
        n = max(5, min(repeats, int(cap_s * 1e3 / calib[i])))
        r["times"][key] = []
        for _ in range(n):
            if before:
                before()
            t = time.perf_counter()
            fn()
            r["times"][key].append((time.perf_counter() - t) * 1e3)
    for r, key, _, _ in all_setups:
        print(f"  {r['name']} {key}: {cell(r['times'][key])} ms", flush=True)


def cpu_table(results: list[dict]) -> str:
    ref = next((statistics.median(r["times"]["numpy"]) for r in results if r["times"].get("numpy")), None)
    rows = ["| model | architecture | weights | ONNX MB | parameters | boxes on the tile | "
            "ONNX Runtime CPU, best of 1/2 threads | / energy | ORT 1 thread | ORT 2 threads | PyTorch CPU 1 thread | "
            "PyTorch 2 threads |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        t = r["times"]
        if "numpy" in t:
            rows.append(f"| {r['name']} | energy detector | none | - | - | {r['boxes']} | "
                        f"{cell(t['numpy'])} (NumPy/SciPy) | 1.00 | | | | |")
            continue
        ort = [x for x in (t.get("onnxruntime/1"), t.get("onnxruntime/2")) if x]
        best = min(ort, key=lambda x: statistics.median(x)) if ort else None
        best_s = "-" if best is None else f"{cell(best)} ({'1' if best is t.get('onnxruntime/1') else '2'} thr.)"
        pt1 = cell(t.get("pytorch/1")) if t.get("pytorch/1") else f"n/a ({r.get('note') or 'no .pt'})"
        boxes = str(r.get("boxes", "-")) + (f" ({r['proposals']} proposals)" if "proposals" in r else "")
        params = "-" if r.get("params") is None else f"{r['params'] / 1e6:.2f} M"
        mb = "-" if r.get("file_mb") is None else f"{r['file_mb']:.2f}"
        rel = "-" if best is None or not ref else f"{statistics.median(best) / ref:.2f}"
        rows.append(f"| {r['name']} | {r['arch']} | {r['weights']} | {mb} | {params} | {boxes} | {best_s} | {rel} | "
                    f"{cell(t.get('onnxruntime/1'))} | {cell(t.get('onnxruntime/2'))} | {pt1} | "
                    f"{cell(t.get('pytorch/2'))} |")
    return "\n".join(rows)


def gpu_table(models: dict, tile, repeats, warmup) -> str:
    setups = [("pytorch", "cuda:0", "fp32"), ("pytorch", "cuda:0", "fp16"), ("onnxruntime", "cuda:0", "fp32")]
    rows = ["| model | backend | device | precision | median ms/tile (quartiles) |", "|---|---|---|---|---|"]
    for name, spec in models.items():
        if ModelSpec.parse(spec).model == "energy":
            continue
        for be, dev, prec in setups:
            try:
                m = load_on(spec, be, 1, dev, prec)
            except Exception as e:  # noqa: BLE001 (a format this model does not have, or no GPU provider)
                print(f"  {name} on {be}/{dev}/{prec}: skipped ({str(e)[:100]})")
                continue
            rows.append(f"| {name} | {be} | {dev} | {prec} | {cell(time_ms(lambda: m.detect(tile), repeats, warmup))} |")
            print(rows[-1], flush=True)
    return "\n".join(rows)


def where(model) -> str:
    """The backend and device a loaded model runs on (NumPy for energy)."""
    b = getattr(model, "backend", None)
    return "NumPy" if b is None else f"{b.kind} {b.device} {getattr(b, 'precision', '')}".strip()


def concurrency_table(specs: dict, tile, repeats, warmup, profile):
    models = [load_model(s if ModelSpec.parse(s).model == "energy" else with_option(s, "name", n), PARAMS, HEIGHT,
                         profile=profile) for n, s in specs.items()]
    det = TileDetector(models, PARAMS, tile_height=HEIGHT, overlap=0, concurrency="serial")
    try:
        singles = {n: statistics.median(time_ms(lambda m=m: m.detect(tile), repeats, warmup))
                   for n, m in zip(specs, models)}
        serial, parallel = [], []
        for _ in range(repeats):  # alternate so that machine noise hits both
            for way, acc in (("serial", serial), ("parallel", parallel)):
                t = time.perf_counter()
                det._run_models(tile, way)
                acc.append((time.perf_counter() - t) * 1e3)
    finally:
        det.stop()
    slowest = max(singles.values())
    s_med, s_spread = med_spread(serial)
    p_med, p_spread = med_spread(parallel)
    rows = ["| models on one tile | median ms | spread | / slowest single | / one after another |",
            "|---|---|---|---|---|",
            *[f"| {n} alone ({where(m)}) | {v:.1f} | | | |" for (n, v), m in zip(singles.items(), models)],
            f"| all {len(models)}, one after another | {s_med:.1f} | {s_spread} | {s_med / slowest:.2f} | 1.00 |",
            f"| all {len(models)}, side by side | {p_med:.1f} | {p_spread} | {p_med / slowest:.2f} | "
            f"{p_med / s_med:.2f} |"]
    table = "\n".join(rows)
    print(table)
    return table


def has_torch_export(spec: str) -> bool:
    """Whether a model folder holds the .pt the PyTorch backend loads."""
    d = Path(ModelSpec.parse(spec).model)
    return d.is_dir() and (d / "model.pt").is_file()


def gpu_stft_table(repeats, warmup):
    """The GPU spectrogram engine against the CPU kernel (its best thread count), at
    several rows per call, and where the time of one 1024-row call goes."""
    from gnuradio.rfdetect.dsp.spectrogram_gpu import (CudaSpectrogramEngine, row_difference, row_tolerance,
                                                       rows_from_spectrum)
    rng = np.random.default_rng(0)
    calls = (64, 256, 1024, 4096)
    n = max(calls) * PARAMS.hop + PARAMS.history
    x = ((rng.standard_normal(n) + 1j * rng.standard_normal(n)) * np.sqrt(0.5)).astype(np.complex64)
    out = np.empty((max(calls), PARAMS.width), np.float32)
    gpu = CudaSpectrogramEngine(PARAMS)
    cpus = {t: SpectrogramEngine(PARAMS, threads=t) for t in sorted({1, 2, os.cpu_count() or 1})}
    check = row_difference(gpu, cpus[1], PARAMS)
    noise = float(np.abs(gpu.compute(x, 1024).astype(np.float64) - cpus[1].compute(x, 1024)).max())
    table = ["| rows per call | GPU MS/s (CuPy/cuFFT, incl. copies) | spread | CPU kernel MS/s, best threads | "
             "CPU 1 / 2 / all threads | GPU / best CPU |", "|---|---|---|---|---|---|"]
    for rows in calls:
        samples = rows * PARAMS.hop

        def rate(eng):
            ms = time_ms(lambda: eng.compute(x, rows, out[:rows]), repeats, warmup)
            return [samples / (t / 1e3) / 1e6 for t in ms]
        g_med, g_spread = med_spread(rate(gpu), "{:.0f}")
        c = {t: statistics.median(rate(e)) for t, e in cpus.items()}
        best_t = max(c, key=c.get)
        table.append(f"| {rows} | {g_med:.0f} | {g_spread} | {c[best_t]:.0f} ({best_t} thr.) | "
                     f"{' / '.join(f'{v:.0f}' for v in c.values())} | {g_med / c[best_t]:.2f} |")
    # one 1024-row call, stage by stage (what StagedSpectrogramEngine._piece does)
    rows, p, ops = 1024, PARAMS, gpu.ops
    need = gpu.frames_needed(rows)
    gpu._grow(rows)
    plan = gpu._plan(rows)
    stages = {k: [] for k in ("host copy into pinned buffer", "host -> GPU", "window, FFT, rows (GPU)",
                              "GPU -> host", "host copy out of pinned buffer")}
    names = list(stages)
    with ops.scope():
        for i in range(warmup + repeats):
            t = [time.perf_counter()]
            gpu._stage_in[:need] = x[:need]
            t.append(time.perf_counter())
            ops.to_device(gpu._stage_in[:need], gpu._d_in[:need])
            ops.wait()
            t.append(time.perf_counter())
            frames = ops.sliding_frames(gpu._d_in[:need], rows, p.fft_size, p.hop)
            ops.xp.multiply(frames, gpu._shifted_window, out=gpu._d_frames[:rows])
            spec = ops.fft(gpu._d_frames[:rows], plan)
            rows_from_spectrum(ops.xp, spec, p, gpu._bin_scale, gpu._d_out[:rows])
            ops.wait()
            t.append(time.perf_counter())
            ops.to_host(gpu._d_out[:rows], gpu._stage_out[:rows])
            ops.wait()
            t.append(time.perf_counter())
            out[:rows] = gpu._stage_out[:rows]
            t.append(time.perf_counter())
            if i >= warmup:
                for k, name in enumerate(names):
                    stages[name].append((t[k + 1] - t[k]) * 1e3)
    total = sum(statistics.median(v) for v in stages.values())
    table += ["", f"One {rows}-row call ({rows * p.hop / 1e6:.1f} M samples in, {rows * p.width * 4 / 2**20:.0f} MiB "
              "of rows out), stage by stage (median ms):", "", "| stage | ms | share | MS/s if it were alone |",
              "|---|---|---|---|"]
    for name, v in stages.items():
        m = statistics.median(v)
        table.append(f"| {name} | {m:.3f} | {m / total:.0%} | {rows * p.hop / (m / 1e3) / 1e6:.0f} |")
    table.append(f"\nRows against the CPU kernel: largest |GPU row - CPU row| {check:.2e} on the start-up test "
                 f"frame and {noise:.2e} on 1024 rows of noise (tolerance {row_tolerance(PARAMS):.0e}; rows in [0, 1]).")
    gpu.close()
    for e in cpus.values():
        e.close()
    text = "\n".join(table)
    print(text, flush=True)
    return text


def gpu_concurrency_tables(specs: dict, tile, repeats, warmup) -> str:
    """Models on one tile on the GPU (PyTorch, one CUDA stream each), one after another
    and side by side, in FP32 and FP16."""
    parts = []
    for prec in ("fp32", "fp16"):
        profile = PROFILES["desktop-gpu"].with_overrides("pytorch", "cuda:0", prec)
        parts += ["", f"**{len(specs)} models on one tile on the GPU** (PyTorch CUDA {prec.upper()}, "
                      "one CUDA stream and one thread per model):", "",
                  concurrency_table(specs, tile, repeats, warmup, profile)]
    return "\n".join(parts)


def main():
    from rfdetect_training.archs import ARCHS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", default=[], metavar="NAME=SPEC",
                    help="a model to add (repeatable): NAME=default|energy|folder|file[?options]")
    ap.add_argument("--no-default-models", action="store_true", help="no default/energy")
    ap.add_argument("--arch", action="append", default=None, metavar="ARCH[:BACKBONE]",
                    help=f"random-weight networks to time (repeatable; default: each of {', '.join(ARCHS)} "
                         f"with its default backbone; 'none' for none)")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--slow-ms", type=float, default=2000.0,
                    help="setups slower than this per run are timed on their own, after the others")
    ap.add_argument("--cap-s", type=float, default=120.0,
                    help="seconds per slow setup: fewer runs than --repeats when they do not fit (at least 5)")
    ap.add_argument("--no-concurrency", action="store_true", help="skip the several-models table")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--gpu-only", action="store_true",
                    help="only the GPU tables (CUDA per model, several models on one GPU, GPU STFT), into "
                         "their own section of docs/performance.md")
    a = ap.parse_args()
    global REPEATS
    REPEATS = a.repeats
    if a.repeats < 4:
        ap.error("--repeats: at least 4 (quartiles)")
    models = named_models(ap, a.model, {} if a.no_default_models else {"default": "default", "energy": "energy"})
    archs = [x.partition(":") for x in (a.arch if a.arch is not None else ARCHS) if x != "none"]
    gpu = cuda_available()
    if a.gpu_only:
        if not gpu:
            ap.error("--gpu-only: PyTorch sees no CUDA GPU here")
        return gpu_only(models, archs, a)
    load0 = os.getloadavg()[0]
    t0 = time.monotonic()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tile = real_tile(work)
        all_setups = []
        for name, spec in models.items():
            card = None
            if ModelSpec.parse(spec).model != "energy":
                from gnuradio.rfdetect.inference.model_runtime import model_card_file
                card = ModelCard.load(model_card_file(ModelSpec.parse(spec).model))
            info = {"arch": "energy" if card is None else card.extra.get("architecture", card.output_format),
                    "weights": "none" if card is None else "trained"}
            r, su = setups(name, spec, info, tile)
            results.append(r)
            all_setups += su
        random_specs = {}
        for arch_name, _, backbone in archs:
            d, note = export_random(work, arch_name, backbone or None, tile)
            random_specs[arch_name] = str(d)
            r, su = setups(f"{d.name} (random)", str(d), {"arch": arch_name, "weights": "random", "note": note}, tile)
            results.append(r)
            all_setups += su
        print(f"timing {len(all_setups)} setups", flush=True)
        run_all(all_setups, a.repeats, a.warmup, a.slow_ms, a.cap_s)
        parts = ["**Milliseconds per 1024 x 1024 tile**, one model at a time: median (quartiles) of detect() "
                 f"over {a.repeats} runs after {a.warmup} warm-up runs; the setups take turns, one run each per round, "
                 f"so that load from other work falls on all alike; setups slower than {a.slow_ms:g} ms run alone "
                 f"afterwards, as many runs as fit in {a.cap_s:g} s (n= when fewer than {a.repeats}):", "",
                 cpu_table(results)]
        if not a.no_concurrency:
            af = next((s for n, s in models.items() if "anchor_free" in n), random_specs.get("anchor_free"))
            trio = {"default": "default", "energy": "energy"}
            if af:
                trio = {"default": "default", "anchor_free": af, "energy": "energy"}
            parts += ["", f"**{len(trio)} models on one tile** (ONNX Runtime / NumPy on the CPU, one thread per "
                          f"model; anchor_free: {'trained' if af not in random_specs.values() else 'random weights'}):",
                      "", concurrency_table(trio, tile, a.repeats, a.warmup, PROFILES["cpu"])]
        parts += ["", "The GPU tables are `bench/models.py --gpu-only`'s (their own section below)."]
    body = "\n".join(parts)
    header = stamp(f"{os.cpu_count()} cores, {'GPU' if gpu else 'no GPU'}, load average {load0:.1f} at the start "
                   f"and {os.getloadavg()[0]:.1f} at the end (a shared machine: other work ran), "
                   f"{(time.monotonic() - t0) / 60:.1f} min, commit {git_commit()}")
    publish(header, body, "bench/models.py", a.no_write)


def publish(header: str, body: str, section: str, no_write: bool) -> None:
    print(header)
    print(body)
    if not no_write:
        write_section("performance.md", section, header, body)




def gpu_only(models: dict, archs: list, a) -> None:
    """The GPU tables alone: per model on CUDA, the models that have a .pt side by side
    on one GPU (one CUDA stream each), the GPU STFT."""
    import torch
    load0 = os.getloadavg()[0]
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tile = real_tile(work)
        random_specs = {}
        for arch_name, _, backbone in archs:
            d, _ = export_random(work, arch_name, backbone or None, tile)
            random_specs[f"{d.name} (random)"] = str(d)
        gmodels = {n: s for n, s in models.items() if ModelSpec.parse(s).model != "energy"}
        gmodels.update(random_specs)
        parts = ["**Milliseconds per 1024 x 1024 tile on the GPU**, one model at a time (median and quartiles of "
                 f"detect(): network, decode, NMS; {a.repeats} runs after {a.warmup} warm-up runs):", "",
                 gpu_table(gmodels, tile, a.repeats, a.warmup)]
        trio = dict(list({n: s for n, s in gmodels.items() if has_torch_export(s)}.items())[:3])
        if len(trio) >= 2 and not a.no_concurrency:
            parts.append(gpu_concurrency_tables(trio, tile, a.repeats, a.warmup))
        try:
            parts += ["", "**STFT on the GPU** (default spectrogram: FFT 4096, hop 2048, 1024 columns; "
                          f"{a.repeats} calls after {a.warmup} warm-up calls):", "",
                      gpu_stft_table(a.repeats, a.warmup)]
        except ImportError as e:
            parts += ["", f"STFT on the GPU: not run ({e})"]
    body = "\n".join(parts)
    header = stamp(f"{torch.cuda.get_device_name(0)}, {os.cpu_count()} cores, load average {load0:.1f} at the start "
                   f"and {os.getloadavg()[0]:.1f} at the end, PyTorch {torch.__version__}, "
                   f"{(time.monotonic() - t0) / 60:.1f} min, commit {git_commit()}")
    publish(header, body, "bench/models.py on a GPU", a.no_write)


if __name__ == "__main__":
    main()
