"""export: checkpoint -> model.onnx + model.card.json (+ model.engine where TensorRT is).

The ONNX file is checked against PyTorch on sample tiles before it is written: every
output within ``atol + rtol*|value|`` (ONNX_ATOL, ONNX_RTOL) or the export fails. The
card carries everything the Detector checks (labels, input shape, spectrogram
parameters, output format, thresholds) and the validation metrics. Files appear
atomically: a failed export leaves no model behind.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import torch

from gnuradio.rfdetect.model_runtime import ModelCard, card_path_for

from .archs import load_tile, make_arch

ONNX_ATOL = 1e-4
ONNX_RTOL = 1e-3
ONNX_OPSET = 17


class ExportError(RuntimeError):
    pass


def load_checkpoint(path, ds, device="cpu"):
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"checkpoint not found: {path}")
    try:
        ck = torch.load(path, map_location=device, weights_only=False)
    except Exception as e:  # torch raises several types for a damaged file
        raise ExportError(f"checkpoint {path} is unreadable ({type(e).__name__}: {e})") from None
    arch = make_arch(ck["arch"], ck["labels"], ck["backbone"], ds["params"], ds["tile_height"])
    model = arch.build()
    model.load_state_dict(ck["model"])
    return arch, model.to(device).eval()


def _sample_inputs(arch, ds, n=3):
    samples = []
    for im in ds["images"][:n]:
        tile, _, _ = load_tile(ds, im)
        samples.append(arch.example_inputs(tile))
    return samples


def export_onnx(arch, model, ds, out_dir, metrics: dict, score_threshold: float, name: str = "model",
                extra: dict | None = None) -> Path:
    import onnxruntime as ort
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / f"{name}.onnx"
    tmp = out_dir / f".{name}.{os.getpid()}.onnx"
    module = arch.export_module(model).eval()
    samples = _sample_inputs(arch, ds)
    try:
        torch.onnx.export(module, samples[0], str(tmp), input_names=arch.input_names,
                          output_names=arch.output_names, dynamic_axes=arch.dynamic_axes,
                          opset_version=ONNX_OPSET, dynamo=False)
        sess = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        worst = 0.0
        for inputs in samples:
            with torch.no_grad():
                ref = module(*inputs)
            ref = [ref] if isinstance(ref, torch.Tensor) else list(ref)
            got = sess.run(arch.output_names, {n: t.numpy() for n, t in zip(arch.input_names, inputs)})
            for r, g, oname in zip(ref, got, arch.output_names):
                r = r.numpy()
                if r.shape != g.shape:
                    raise ExportError(f"ONNX output {oname} has shape {g.shape}, PyTorch {r.shape}")
                err = np.abs(r.astype(np.float64) - g) - ONNX_RTOL * np.abs(r)
                worst = max(worst, float(err.max(initial=0.0)))
                if worst > ONNX_ATOL:
                    raise ExportError(f"ONNX output {oname} differs from PyTorch by {worst:.3g} "
                                      f"(> {ONNX_ATOL} + {ONNX_RTOL}*|x|)")
        card = ModelCard(name=f"{arch.name}-{arch.backbone}", labels=arch.labels,
                         input_shape=[1, 1, ds["tile_height"], ds["params"].width], spectrogram=ds["params"],
                         output_format=arch.output_format, score_threshold=score_threshold, nms_iou=0.5,
                         metrics=metrics, extra={**arch.card_extra(), **(extra or {}),
                                                 "onnx_check": {"max_excess_error": worst, "atol": ONNX_ATOL,
                                                                "rtol": ONNX_RTOL, "tiles": len(samples)}})
        os.replace(tmp, final)
        card.save(card_path_for(final))
    finally:
        tmp.unlink(missing_ok=True)
    print(f"export: {final} (ONNX matches PyTorch on {len(samples)} tiles, worst excess {worst:.2g})")
    return final


def export_torch(arch, model, ds, out_dir, name: str = "model") -> Path | None:
    """``model.pt`` (a torch.export program, run by the Detector's PyTorch backend)
    beside the ONNX file, checked against the eager model like the ONNX export. None,
    with the reason, for networks torch.export cannot capture (Faster R-CNN's
    data-dependent shapes)."""
    from gnuradio.rfdetect.backends import TorchBackend, save_torch_program
    final = Path(out_dir) / f"{name}.pt"
    module = arch.export_module(model).eval()
    samples = _sample_inputs(arch, ds)
    try:
        save_torch_program(module, samples[0], final, arch.input_names, arch.output_names,
                           dynamic_batch=bool(arch.dynamic_axes) and arch.input_names[0] in arch.dynamic_axes)
    except Exception as e:  # torch.export raises many types for graphs it cannot capture
        print(f"export: no {final.name}: torch.export cannot capture {arch.name} "
              f"({type(e).__name__}: {str(e).splitlines()[0][:160]}); the ONNX model is complete",
              file=sys.stderr)
        return None
    backend = TorchBackend(final)
    worst = 0.0
    for inputs in samples:
        with torch.no_grad():
            ref = module(*inputs)
        ref = [ref] if isinstance(ref, torch.Tensor) else list(ref)
        got = backend.run({n: t.numpy() for n, t in zip(arch.input_names, inputs)}, arch.output_names)
        for r, g, oname in zip(ref, got, arch.output_names):
            err = np.abs(r.numpy().astype(np.float64) - g) - ONNX_RTOL * np.abs(r.numpy())
            worst = max(worst, float(err.max(initial=0.0)))
            if worst > ONNX_ATOL:
                final.unlink(missing_ok=True)
                raise ExportError(f"{final.name} output {oname} differs from PyTorch by {worst:.3g}")
    print(f"export: {final} (matches the eager model on {len(samples)} tiles)")
    return final


def export_engine(onnx_path, fp16=True, int8_calibration_dir=None) -> Path | None:
    """A TensorRT engine beside the ONNX file, validated against ONNX Runtime; None
    (with one line saying why) where TensorRT is not installed."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        print("export: TensorRT is not installed here: no .engine built (the ONNX model is complete; "
              "the Detector builds the engine from it on a TensorRT machine)", file=sys.stderr)
        return None
    from gnuradio.rfdetect.tensorrt_backend import build_engine, validate_engine
    engine = build_engine(onnx_path, fp16=fp16, int8_calibration_dir=int8_calibration_dir)
    validate_engine(engine, onnx_path)
    return engine
