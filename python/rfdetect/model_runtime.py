"""Loading detectors: the model card, the ``energy`` detector and ONNX Runtime models.

A model is any object with ``name``, ``labels`` and ``detect(tile) -> [PixelBox]``.
Model files travel with a card, ``<stem>.card.json`` beside ``<stem>.onnx``
(docs/model_card.md), that says which spectrogram the model was trained on; a model
whose card disagrees with the running spectrogram is refused, because it would
silently detect worse.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from . import postprocess
from .energy_detector import EnergyDetector, PixelBox
from .spectrogram import SpectrogramConfigError, SpectrogramParams

CARD_SCHEMA = "rfdetect.model_card/1"
OUTPUT_FORMATS = postprocess.FORMATS
BUILTIN_MODELS = ("energy",)
# the embedded default: two_stage, trained by rfdetect-train on `rfdetect synth` data
# (python/rfdetect/models/default/README.md has the command that reproduces it)
DEFAULT_MODEL = Path(__file__).resolve().parent / "models" / "default" / "model.onnx"


class ModelError(ValueError):
    """A model that cannot be used here, with the reason."""


def card_path_for(model_path) -> Path:
    p = Path(model_path)
    return p.with_name(p.stem + ".card.json")


@dataclass
class ModelCard:
    name: str
    labels: list
    input_shape: list
    spectrogram: SpectrogramParams
    output_format: str = "boxes_scores_labels/1"
    input_name: str = "tile"
    input_dtype: str = "float32"
    score_threshold: float = 0.5
    nms_iou: float = 0.5
    metrics: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = {
            "schema": CARD_SCHEMA,
            "name": self.name,
            "labels": list(self.labels),
            "input": {"name": self.input_name, "shape": list(self.input_shape), "dtype": self.input_dtype},
            "spectrogram": self.spectrogram.to_dict(),
            "output": {"format": self.output_format},
            "thresholds": {"score": self.score_threshold, "nms_iou": self.nms_iou},
            "metrics": self.metrics,
        }
        d.update(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: dict, where: str = "model card") -> "ModelCard":
        def need(cond, msg):
            if not cond:
                raise ModelError(f"{where}: {msg}")
        need(isinstance(d, dict), "is not a JSON object")
        need(d.get("schema") == CARD_SCHEMA, f"schema must be {CARD_SCHEMA!r}, got {d.get('schema')!r}")
        need(isinstance(d.get("name"), str) and d["name"], "needs a non-empty \"name\"")
        labels = d.get("labels")
        need(isinstance(labels, list) and labels and all(isinstance(x, str) for x in labels),
             "\"labels\" must be a non-empty list of strings")
        inp = d.get("input") or {}
        shape = inp.get("shape")
        need(isinstance(shape, list) and len(shape) == 4 and all(isinstance(v, int) and v > 0 for v in shape),
             "input.shape must be [1, 1, height, width]")
        need(inp.get("dtype", "float32") == "float32", "input.dtype must be float32")
        try:
            spec = SpectrogramParams.from_dict(d.get("spectrogram") or {})
        except (SpectrogramConfigError, TypeError) as e:
            raise ModelError(f"{where}: bad \"spectrogram\": {e}") from None
        fmt = (d.get("output") or {}).get("format")
        need(fmt in OUTPUT_FORMATS, f"output.format {fmt!r} is not one of {OUTPUT_FORMATS}")
        th = d.get("thresholds") or {}
        score = th.get("score", 0.5)
        need(isinstance(score, (int, float)) and 0 <= score <= 1, "thresholds.score must be in [0, 1]")
        known = {"schema", "name", "labels", "input", "spectrogram", "output", "thresholds", "metrics"}
        return cls(name=d["name"], labels=labels, input_shape=shape, spectrogram=spec, output_format=fmt,
                   input_name=inp.get("name", "tile"), score_threshold=float(score),
                   nms_iou=float(th.get("nms_iou", 0.5)), metrics=d.get("metrics") or {},
                   extra={k: v for k, v in d.items() if k not in known})

    @classmethod
    def load(cls, path) -> "ModelCard":
        path = Path(path)
        if not path.is_file():
            raise ModelError(f"model card not found: {path} (every model file needs its card beside it)")
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ModelError(f"model card {path} is not valid JSON: {e}") from None
        return cls.from_dict(d, str(path))

    def save(self, path) -> None:
        from .sigmf_io import atomic_write_json
        atomic_write_json(path, self.to_dict())

    def check_compatible(self, params: SpectrogramParams, tile_height: int, where: str) -> None:
        diffs = self.spectrogram.differences(params)
        if diffs:
            raise ModelError(f"model {where} was trained for other spectrogram settings than this "
                             f"STFT Tile block uses ({'; '.join(diffs)}): retrain it or change the "
                             f"STFT Tile parameters")
        want = [1, 1, tile_height, params.width]
        if self.output_format == "crop_classifier/1":
            want[2] = self.input_shape[2]  # it classifies crops of proposals: any tile height works
        if list(self.input_shape) != want:
            raise ModelError(f"model {where} takes tiles of shape {self.input_shape}, but the Detector "
                             f"makes {want} (tile height {tile_height}, width {params.width})")


class OnnxBackend:
    """Runs a network with ONNX Runtime (CPU provider; GPU providers when present)."""

    kind = "onnxruntime"

    def __init__(self, path, providers: Optional[list] = None, intra_threads: int = 1):
        import onnxruntime as ort
        self.path = Path(path)
        so = ort.SessionOptions()
        so.intra_op_num_threads = intra_threads  # models run side by side: one thread each
        so.log_severity_level = 3
        avail = ort.get_available_providers()
        providers = providers or [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in avail]
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=so, providers=providers)
        except Exception as e:  # onnxruntime raises several unrelated types
            raise ModelError(f"cannot load ONNX model {self.path}: the file is corrupt or not ONNX "
                             f"({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, feed: dict, outputs: list) -> list:
        return self.session.run(outputs, feed)


# network inputs and outputs each output format needs (rfdetect.postprocess)
_FORMAT_IO = {
    "boxes_scores_labels/1": (None, ["boxes", "scores", "labels"]),
    "dense_ltrb/1": (None, ["scores", "ltrb"]),
    "crop_classifier/1": (["crops", "geometry"], ["probs"]),
}


class CardModel:
    """A trained detector: a backend that runs the network, the card that says what it
    is, and the format's pre/post-processing from :mod:`rfdetect.postprocess`."""

    def __init__(self, backend, card: ModelCard, score_threshold: Optional[float] = None):
        self.backend = backend
        self.card = card
        self.name = card.name
        self.labels = list(card.labels)
        self.format = card.output_format
        self.score_threshold = card.score_threshold if score_threshold is None else float(score_threshold)
        inputs, outputs = _FORMAT_IO[self.format]
        missing = [n for n in outputs if n not in backend.output_names]
        missing += [n for n in (inputs or []) if n not in backend.input_names]
        if missing:
            raise ModelError(f"model {backend.path} lacks {missing} required by its card's output "
                             f"format {self.format} (inputs {backend.input_names}, outputs "
                             f"{backend.output_names})")
        self.outputs = outputs
        if self.format == "crop_classifier/1":
            opts = dict(card.extra.get("proposals") or {})
            self.proposer = EnergyDetector(card.spectrogram, **opts)
            self.crop_size = int(card.extra.get("crop_size", postprocess.CROP_SIZE))

    def raw(self, tile: np.ndarray):
        """-> (boxes [N,4], scores [N], labels [N]) in tile pixels, before thresholds."""
        x = np.ascontiguousarray(tile, dtype=np.float32)
        if self.format == "crop_classifier/1":
            props = self.proposer.detect(x)
            if not props:
                return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
            boxes = np.array([[b.x0, b.y0, b.x1, b.y1] for b in props], np.float32)
            crops, geom = postprocess.letterbox_crops(x, boxes, self.crop_size)
            (probs,) = self.backend.run({"crops": crops, "geometry": geom}, self.outputs)
            return postprocess.classify_proposals(probs, boxes, 0.0)
        feed = {self.backend.input_names[0]: x[None, None]}
        out = self.backend.run(feed, self.outputs)
        if self.format == "dense_ltrb/1":
            return postprocess.decode_dense(out[0], out[1], int(self.card.extra["dense"]["stride"]),
                                            self.score_threshold, self.card.nms_iou)
        boxes, scores, labels = out
        return boxes.reshape(-1, 4), scores.reshape(-1), labels.reshape(-1)

    def detect(self, tile: np.ndarray) -> list[PixelBox]:
        boxes, scores, labels = self.raw(tile)
        out = []
        for (x0, y0, x1, y1), s, lab in zip(boxes, scores, labels):
            if s < self.score_threshold or not (x1 > x0 and y1 > y0):
                continue
            li = int(lab)
            name = self.labels[li] if 0 <= li < len(self.labels) else f"class_{li}"
            out.append(PixelBox(float(x0), float(y0), float(x1), float(y1), float(s), name))
        return out


class EnergyModel(EnergyDetector):
    @property
    def labels(self):
        return [self.label]


def resolve_model_path(spec: str) -> Path:
    """``name``/folder/file -> a model file; format priority .engine > .onnx > .pt."""
    if spec == "default":
        if not DEFAULT_MODEL.is_file():
            raise ModelError(f"the default model is missing from this installation ({DEFAULT_MODEL}); "
                             f"reinstall gr-rfdetect or give --model energy")
        return DEFAULT_MODEL
    p = Path(spec)
    if not p.exists():
        base = os.environ.get("RFDETECT_MODEL_DIR")
        if base and (Path(base) / spec).exists():
            p = Path(base) / spec
        else:
            raise ModelError(f"model not found: {spec!r} (give 'default', 'energy', a model file, or a folder "
                             f"holding model.onnx and model.card.json)")
    if p.is_dir():
        for ext in (".onnx",):  # .engine and .pt backends arrive with the inference runtime
            cands = sorted(p.glob("*" + ext))
            if cands:
                return cands[0]
        raise ModelError(f"model folder {p} holds no .onnx model")
    return p


def load_model(spec: str, params: SpectrogramParams, tile_height: int,
               score_threshold: Optional[float] = None):
    """Load one model by spec; refuses models whose card does not fit ``params``."""
    if spec in BUILTIN_MODELS:
        return EnergyModel(params)
    path = resolve_model_path(spec)
    if path.suffix != ".onnx":
        raise ModelError(f"model {path}: unsupported format {path.suffix!r} (this build runs .onnx models)")
    if path.stat().st_size == 0:
        raise ModelError(f"ONNX model {path} is empty")
    card = ModelCard.load(card_path_for(path))
    card.check_compatible(params, tile_height, str(path))
    return CardModel(OnnxBackend(path), card, score_threshold)
