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
