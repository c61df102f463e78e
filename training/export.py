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

from gnuradio.rfdetect.inference import box_profile, postprocess
from gnuradio.rfdetect.inference.backends import excess_error
from gnuradio.rfdetect.inference.model_runtime import ModelCard, card_for

from .archs import load_tile, make_arch

ONNX_ATOL = 1e-4
ONNX_RTOL = 1e-3
ONNX_OPSET = 17


class ExportError(RuntimeError):
    pass


def load_checkpoint(path, ds, device="cpu", class_confidence=None, score_rule=None, class_region=None,
                    box_vote=None, refine_min_rows=None, splatter_db=None, refine_peak_db=None, trace_lines=None,
                    profile_classifier=None):
    """-> (arch, model in eval mode). ``class_confidence``, ``score_rule``, ``class_region``: the label rule's
    settings (anchor_free; class_confidence chosen on validation tiles by rfdetect-train run);
    ``box_vote``: anchor_free's box voting IoU (0: off); ``refine_min_rows``: the shortest box
    whose time edges are refined; ``splatter_db``: the contrast of switching splatter dropped
    (0: off); ``refine_peak_db``: the contrast of the pixels a box with no clear profile snaps
    to (0: off); ``trace_lines``: whether a box over part of a chirp's sweep grows to the whole
    sweep; else the arch's defaults. ``profile_classifier``: the card value of a profile
    classifier (training.profile) that names the boxes with the network."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"checkpoint not found: {path}")
    try:
        ck = torch.load(path, map_location=device, weights_only=False)
    except Exception as e:  # torch raises several types for a damaged file
        raise ExportError(f"checkpoint {path} is unreadable ({type(e).__name__}: {e})") from None
    arch = make_arch(ck["arch"], ck["labels"], ck["backbone"], ds["params"], ds["tile_height"])
    if class_confidence is not None:
        if not hasattr(arch, "class_confidence"):
            raise ExportError(f"--class-confidence applies to anchor_free, not {arch.name}")
        if not 0.0 < float(class_confidence) <= 1.0:
            raise ExportError(f"--class-confidence {class_confidence} must be in (0, 1]")
        arch.class_confidence = float(class_confidence)
    for flag, attr, value, check in (("--score-rule", "score_rule", score_rule, postprocess.check_score_rule),
                                     ("--class-region", "class_region", class_region,
                                      postprocess.check_class_region),
                                     ("--box-vote", "box_vote", box_vote, postprocess.check_box_vote),
                                     ("--refine-min-rows", "refine_min_rows", refine_min_rows,
                                      postprocess.check_refine_min_rows),
                                     ("--splatter-db", "splatter_db", splatter_db, postprocess.check_splatter_db),
                                     ("--refine-peak-db", "refine_peak_db", refine_peak_db,
                                      postprocess.check_refine_peak_db),
                                     ("--trace-lines", "trace_lines", trace_lines, postprocess.check_trace_lines)):
        if value is None:
            continue
        if not hasattr(arch, attr):
            raise ExportError(f"{flag} applies to anchor_free, not {arch.name}")
        try:
            setattr(arch, attr, check(value))
        except ValueError as e:
            raise ExportError(f"{flag}: {e}") from None
    if profile_classifier is not None:
        if not hasattr(arch, "profile_classifier"):
            raise ExportError(f"a profile classifier applies to anchor_free, not {arch.name}")
        try:
            arch.profile_classifier = box_profile.ProfileClassifier(profile_classifier, len(arch.labels),
                                                                    ds["params"].db_per_unit)
        except box_profile.ProfileError as e:
            raise ExportError(str(e)) from None
    model = arch.build()
    model.load_state_dict(ck["model"])
    return arch, model.to(device).eval()


def _sample_inputs(arch, ds, n=3):
    samples = []
    for im in ds["images"][:n]:
        tile, _, _ = load_tile(ds, im)
        samples.append(arch.example_inputs(tile))
    return samples


def compare_detections(ref, got) -> float:
    """Detector outputs (boxes [N,4], scores [N], labels [N]) as sets: NMS keeps near-tied
    boxes in either order, so each PyTorch box is matched to an ONNX box of the same label
    by IoU before values are compared. Returns the worst excess error; raises ExportError
    when the sets differ."""
    from gnuradio.rfdetect.inference.postprocess import box_iou_matrix
    (rb, rs, rl), (gb, gs, gl) = ([np.asarray(a) for a in x] for x in (ref, got))
    rb, gb = rb.reshape(-1, 4).astype(np.float64), gb.reshape(-1, 4).astype(np.float64)
    if len(rb) != len(gb):
        raise ExportError(f"ONNX finds {len(gb)} boxes, PyTorch {len(rb)}")
    if len(rb) == 0:
        return 0.0
    iou = box_iou_matrix(rb, gb)
    iou[rl.reshape(-1)[:, None] != gl.reshape(-1)[None, :]] = -1.0
    worst, used = 0.0, set()
    for i in np.argsort(-rs.reshape(-1)):
        order = [j for j in np.argsort(-iou[i]) if j not in used]
        if not order or iou[i, order[0]] < 0.9:
            raise ExportError(f"PyTorch box {rb[i].round(1).tolist()} (label {int(rl.reshape(-1)[i])}) has no "
                              f"ONNX counterpart")
        j = order[0]
        used.add(j)
        for r, g in ((rb[i], gb[j]), (rs.reshape(-1)[i], gs.reshape(-1)[j])):
            worst = max(worst, excess_error(r, g, ONNX_RTOL))
    if worst > ONNX_ATOL:
        raise ExportError(f"ONNX detections differ from PyTorch by {worst:.3g} (> {ONNX_ATOL} + {ONNX_RTOL}*|x|)")
    return worst


def check_against_eager(arch, module, samples, run, what: str) -> float:
    """Run ``run(feed) -> outputs`` and the eager module on each sample; every output
    within ONNX_ATOL + ONNX_RTOL*|x| (detections compared as sets) or ExportError.
    Returns the worst excess error."""
    worst = 0.0
    for inputs in samples:
        with torch.no_grad():
            ref = module(*inputs)
        ref = [r.numpy() for r in ([ref] if isinstance(ref, torch.Tensor) else list(ref))]
        got = run({n: t.numpy() for n, t in zip(arch.input_names, inputs)})
        if arch.output_format == "boxes_scores_labels/1":
            worst = max(worst, compare_detections(ref, got))
            continue
        for r, g, oname in zip(ref, got, arch.output_names):
            if r.shape != g.shape:
                raise ExportError(f"{what} output {oname} has shape {g.shape}, PyTorch {r.shape}")
            atol = arch.output_atol.get(oname, ONNX_ATOL)
            excess = excess_error(r, g, ONNX_RTOL)
            if excess > atol:
                raise ExportError(f"{what} output {oname} differs from PyTorch by {excess:.3g} "
                                  f"(> {atol} + {ONNX_RTOL}*|x|)")
            worst = max(worst, excess)
    return worst


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
        worst = check_against_eager(arch, module, samples, lambda feed: sess.run(arch.output_names, feed), "ONNX")
        card = ModelCard(name=f"{arch.name}-{arch.backbone}", labels=arch.labels,
                         input_shape=[1, 1, ds["tile_height"], ds["params"].width], spectrogram=ds["params"],
                         output_format=arch.output_format, score_threshold=score_threshold, nms_iou=0.5,
                         metrics=metrics, extra={**arch.card_extra(), **(extra or {}),
                                                 "onnx_check": {"max_excess_error": worst, "atol": ONNX_ATOL,
                                                                "rtol": ONNX_RTOL, "tiles": len(samples)}})
        os.replace(tmp, final)
        card.save(card_for(final))
    finally:
        tmp.unlink(missing_ok=True)
    print(f"export: {final} (ONNX matches PyTorch on {len(samples)} tiles, worst excess {worst:.2g})")
    return final


def export_torch(arch, model, ds, out_dir, name: str = "model") -> Path | None:
    """``model.pt`` (a torch.export program, run by the Detector's PyTorch backend)
    beside the ONNX file, checked against the eager model like the ONNX export. None,
    with the reason, for networks torch.export cannot capture (Faster R-CNN's
    data-dependent shapes)."""
    from gnuradio.rfdetect.inference.backends import TorchBackend, save_torch_program
    final = Path(out_dir) / f"{name}.pt"
    if not arch.torch_exportable:
        print(f"export: no {final.name}: torch.export cannot capture {arch.name} (data-dependent shapes); "
              f"the ONNX model is complete", file=sys.stderr)
        return None
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
    try:
        check_against_eager(arch, module, samples, lambda feed: backend.run(feed, arch.output_names), final.name)
    except ExportError:
        final.unlink(missing_ok=True)
        raise
    print(f"export: {final} (matches the eager model on {len(samples)} tiles)")
    return final


def export_engine(onnx_path, fp16=True) -> Path | None:
    """A TensorRT engine beside the ONNX file, validated against ONNX Runtime; None
    (with one line saying why) where TensorRT is not installed."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        print("export: TensorRT is not installed here: no .engine built (the ONNX model is complete; "
              "the Detector builds the engine from it on a TensorRT machine)", file=sys.stderr)
        return None
    from gnuradio.rfdetect.inference.tensorrt_backend import build_engine, validate_engine
    engine = build_engine(onnx_path, fp16=fp16,
                          out_path=Path(onnx_path).with_suffix(".engine"))
    validate_engine(engine, onnx_path)
    return engine
