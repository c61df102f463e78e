#!/usr/bin/env python3
"""Inference cost of every architecture and model: ms per tile per backend, file size,
parameters; and several models on one tile.

    nice -n 10 .venv/bin/python bench/models.py [--model NAME=SPEC ...] [--no-default-models]
                                                [--arch ARCH[:BACKBONE] ...] [--repeats 20]
                                                [--warmup 3] [--no-concurrency] [--no-write]

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
and 2 threads. On a machine with a GPU also PyTorch CUDA FP32/FP16 and ONNX Runtime CUDA.
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
            *[f"| {n} alone | {v:.1f} | | | |" for n, v in singles.items()],
            f"| all {len(models)}, one after another | {s_med:.1f} | {s_spread} | {s_med / slowest:.2f} | 1.00 |",
            f"| all {len(models)}, side by side | {p_med:.1f} | {p_spread} | {p_med / slowest:.2f} | "
            f"{p_med / s_med:.2f} |"]
    table = "\n".join(rows)
    print(table)
    return table


def gpu_stft_table(repeats, warmup):
    from gnuradio.rfdetect.dsp.spectrogram_gpu import CudaSpectrogramEngine
    rng = np.random.default_rng(0)
    rows_per_call = 1024
    x = (rng.standard_normal(rows_per_call * PARAMS.hop + PARAMS.history)
         + 1j * rng.standard_normal(rows_per_call * PARAMS.hop + PARAMS.history)).astype(np.complex64)
    out = np.empty((rows_per_call, PARAMS.width), np.float32)
    samples = rows_per_call * PARAMS.hop
    table = ["| engine | rows per call | median MS/s | spread |", "|---|---|---|---|"]
    gpu = CudaSpectrogramEngine(PARAMS)
    cpu = SpectrogramEngine(PARAMS)
    ref = cpu.compute(x, rows_per_call).copy()
    got = gpu.compute(x, rows_per_call, out)
    err = float(np.abs(got - ref).max())
    for name, eng in (("GPU (CuPy/cuFFT, incl. copies)", gpu), ("CPU (FFTW, 2 threads)", cpu)):
        ms = time_ms(lambda e=eng: e.compute(x, rows_per_call, out), repeats, warmup)
        rates = [samples / (t / 1e3) / 1e6 for t in ms]
        med, spread = med_spread(rates)
        table.append(f"| {name} | {rows_per_call} | {med:.0f} | {spread} |")
    table.append(f"\nlargest |GPU row - CPU row|: {err:.2e}")
    text = "\n".join(table)
    print(text)
    return text


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
    a = ap.parse_args()
    global REPEATS
    REPEATS = a.repeats
    if a.repeats < 4:
        ap.error("--repeats: at least 4 (quartiles)")
    models = named_models(ap, a.model, {} if a.no_default_models else {"default": "default", "energy": "energy"})
    archs = [x.partition(":") for x in (a.arch if a.arch is not None else ARCHS) if x != "none"]
    gpu = cuda_available()
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
                from gnuradio.rfdetect.inference.model_runtime import model_candidates
                card = ModelCard.load(card_for(model_candidates(ModelSpec.parse(spec).model)[0]))
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
        if gpu:
            gmodels = {**{n: s for n, s in models.items()}, **{f"{k} (random)": v for k, v in random_specs.items()}}
            parts += ["", "**On the GPU**:", "", gpu_table(gmodels, tile, a.repeats, a.warmup)]
            try:
                parts += ["", "**STFT on the GPU**:", "", gpu_stft_table(a.repeats, a.warmup)]
            except Exception as e:  # noqa: BLE001 (CuPy missing while torch has CUDA)
                parts += ["", f"STFT on the GPU: not run ({e})"]
        else:
            parts += ["", "No GPU on this machine: the CUDA rows and the GPU STFT were not run."]
    body = "\n".join(parts)
    header = stamp(f"{os.cpu_count()} cores, {'GPU' if gpu else 'no GPU'}, load average {load0:.1f} at the start "
                   f"and {os.getloadavg()[0]:.1f} at the end (a shared machine: other work ran), "
                   f"{(time.monotonic() - t0) / 60:.1f} min, commit {git_commit()}")
    print(header)
    print(body)
    if not a.no_write:
        write_section("performance.md", "bench/models.py", header, body)


if __name__ == "__main__":
    main()
