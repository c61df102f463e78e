#!/usr/bin/env python3
"""Inference runtime: ms per tile per model and backend, and several models at once.

    .venv/bin/python bench/models.py [--repeats 20] [--no-write]

Models, at the default spectrogram (4096/2048/1024) and 1024-row tiles:
  default      the embedded two-stage model (energy proposals + crop classifier), ONNX
  dense-tiny   the dense single-stage network (tiny backbone), untrained weights (speed
               does not depend on them), exported to ONNX and to .pt by this script
  dense-r18    the same head on a ResNet-18 stride-8 backbone
  energy       the model-free detector (NumPy/SciPy)

Tables (medians over --repeats runs, spread min-max):
  1. ms per tile for each model on each backend that runs here: ONNX Runtime CPU, PyTorch
     CPU; on a GPU also PyTorch CUDA FP32/FP16 and ONNX Runtime CUDA where installed.
  2. three models on one tile, one after another vs side by side (the Detector's
     concurrency), with the ratio side-by-side / slowest single model (goal <= 1.3 on a
     GPU) and side-by-side / one-after-another.
  3. on a GPU: the STFT engine, MS/s including host-to-device and back, vs the CPU engine.
Rewrites its section of docs/performance.md unless --no-write.
"""
import argparse
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from gnuradio.rfdetect.hardware_profile import PROFILES
from gnuradio.rfdetect.model_runtime import ModelCard, load_model
from gnuradio.rfdetect.spectrogram import SpectrogramEngine, SpectrogramParams, spectrogram
from gnuradio.rfdetect.synth import synth_dataset
from gnuradio.rfdetect.sigmf_io import SigMFRecording
from gnuradio.rfdetect.tile_detector import TileDetector

from bench_report import med_spread, stamp, write_section

PARAMS = SpectrogramParams()
HEIGHT = 1024
LABELS = ["ofdm", "fhss", "rb", "chirp", "tone"]


def real_tile(workdir: Path) -> np.ndarray:
    """A 1024-row tile of a synthetic recording with signals (10 MS/s)."""
    (path,) = synth_dataset(workdir / "rec", n=1, seed=4, sample_rate=10e6, duration=0.22, n_signals=10)
    rec = SigMFRecording.open(path)
    iq = rec.read(0, rec.n_samples)
    return spectrogram(iq, PARAMS)[:HEIGHT].copy()


def export_dense(workdir: Path, backbone: str) -> Path:
    """An untrained dense network as model.onnx + model.pt + card (timing only)."""
    import torch
    from rfdetect_training.archs import make_arch
    from gnuradio.rfdetect.backends import save_torch_program
    arch = make_arch("dense", LABELS, backbone, PARAMS, HEIGHT)
    module = arch.export_module(arch.build().eval()).eval()
    x = torch.zeros(1, 1, HEIGHT, PARAMS.width)
    d = workdir / f"dense-{backbone}"
    d.mkdir()
    with warnings.catch_warnings():  # the TorchScript exporter is what rfdetect-train uses too
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(module, (x,), str(d / "model.onnx"), input_names=arch.input_names,
                          output_names=arch.output_names, opset_version=17, dynamo=False)
    save_torch_program(module, (x,), d / "model.pt", arch.input_names, arch.output_names, dynamic_batch=False)
    ModelCard(name=f"dense-{backbone}", labels=LABELS, input_shape=[1, 1, HEIGHT, PARAMS.width],
              spectrogram=PARAMS, output_format=arch.output_format, score_threshold=0.5,
              extra=arch.card_extra()).save(d / "model.card.json")
    return d


def time_ms(fn, repeats):
    fn()  # warm
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1e3)
    return out


def cuda_available() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except ImportError:
        return False


def backend_table(models: dict, tile, repeats, gpu: bool):
    setups = [("onnxruntime", "cpu", "fp32"), ("pytorch", "cpu", "fp32")]
    if gpu:
        setups += [("pytorch", "cuda:0", "fp32"), ("pytorch", "cuda:0", "fp16"), ("onnxruntime", "cuda:0", "fp32")]
    rows = ["| model | backend | device | precision | median ms/tile | spread |", "|---|---|---|---|---|---|"]
    for name, spec in models.items():
        for be, dev, prec in setups:
            if spec == "energy" and be != "onnxruntime":
                continue
            try:
                m = load_model(spec, PARAMS, HEIGHT, profile=PROFILES["cpu"].with_overrides(be, dev, prec))
            except Exception as e:  # a format this model does not have, or no GPU provider
                print(f"  {name} on {be}/{dev}/{prec}: skipped ({str(e)[:100]})")
                continue
            if getattr(m, "backend", None) is not None and m.backend.device != dev:
                print(f"  {name} on {be}/{dev}: ran on {m.backend.device} instead; skipped")
                continue
            ms = time_ms(lambda: m.detect(tile), repeats)
            med, spread = med_spread(ms)
            label = "numpy" if spec == "energy" else be
            rows.append(f"| {name} | {label} | {dev} | {prec} | {med:.1f} | {spread} |")
            print(rows[-1])
    return "\n".join(rows)


def concurrency_table(specs: dict, tile, repeats, profile):
    models = [load_model(s if s == "energy" else f"{s}?name={n}", PARAMS, HEIGHT, profile=profile)
              for n, s in specs.items()]
    det = TileDetector(models, PARAMS, tile_height=HEIGHT, overlap=0, concurrency="serial")
    try:
        singles = {n: statistics.median(time_ms(lambda m=m: m.detect(tile), repeats))
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


def gpu_stft_table(repeats):
    from gnuradio.rfdetect.spectrogram_gpu import CudaSpectrogramEngine
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
        ms = time_ms(lambda e=eng: e.compute(x, rows_per_call, out), repeats)
        rates = [samples / (t / 1e3) / 1e6 for t in ms]
        med, spread = med_spread(rates)
        table.append(f"| {name} | {rows_per_call} | {med:.0f} | {spread} |")
    table.append(f"\nlargest |GPU row - CPU row|: {err:.2e}")
    text = "\n".join(table)
    print(text)
    return text


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    gpu = cuda_available()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tile = real_tile(work)
        tiny, r18 = export_dense(work, "tiny"), export_dense(work, "resnet18")
        models = {"default": "default", "dense-tiny": str(tiny), "dense-r18": str(r18), "energy": "energy"}
        parts = ["**Milliseconds per tile** (1024 x 1024, one model at a time):", "",
                 backend_table(models, tile, a.repeats, gpu)]
        trio = {"default": "default", "dense-tiny": str(tiny), "energy": "energy"}
        parts += ["", "**Three models on one tile** (ONNX Runtime / NumPy on the CPU, one thread per model):", "",
                  concurrency_table(trio, tile, a.repeats, PROFILES["cpu"])]
        if gpu:
            trio_gpu = {"dense-tiny": str(tiny), "dense-r18": str(r18), "dense-r18b": str(r18)}
            prof = PROFILES["desktop-gpu"].with_overrides("pytorch", "cuda:0", "fp16")
            parts += ["", "**Three models on one tile on the GPU** (PyTorch CUDA FP16):", "",
                      concurrency_table(trio_gpu, tile, a.repeats, prof)]
            try:
                parts += ["", "**STFT on the GPU**:", "", gpu_stft_table(a.repeats)]
            except Exception as e:  # CuPy missing while torch has CUDA
                parts += ["", f"STFT on the GPU: not run ({e})"]
        else:
            parts += ["", "No GPU on this machine: the CUDA rows and the GPU STFT were not run."]
    body = "\n".join(parts)
    cores = os.cpu_count()
    header = stamp(f"{cores} cores, {'GPU' if gpu else 'no GPU'}, {a.repeats} runs each")
    print(header)
    if not a.no_write:
        write_section("performance.md", "bench/models.py", header, body)


if __name__ == "__main__":
    main()
