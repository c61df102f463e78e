"""The model card: the JSON beside every model file that says what the model is -- labels,
input shape, the spectrogram parameters it was trained on, output format, thresholds,
metrics (docs/model_card.md) -- and which card belongs to which model file."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..dsp.spectrogram import SpectrogramConfigError, SpectrogramParams
from ..formats.sigmf_io import atomic_write_json
from . import postprocess

CARD_SCHEMA = "rfdetect.model_card/1"
OUTPUT_FORMATS = postprocess.FORMATS
ENGINE_SUFFIXES = (".engine", ".trt", ".plan")
ENGINE_CACHE_RE = re.compile(r"^(?P<base>.*)\.[a-z0-9-]+-sm\d+-trt[0-9.]+\.(fp16|fp32)$")


class ModelError(ValueError):
    """A model that cannot be used here, with the reason."""


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
    # the model reports nothing under this score, whatever threshold it is run at: its
    # low-score boxes are not signals (narrowband-zoom: an OFDM subcarrier at its fine grid)
    min_score: float = 0.0
    # nor boxes wider than this many tile columns (None: any): a model run beside another on a
    # finer grid reports only the channels that the other's grid cannot resolve
    max_box_columns: Optional[int] = None
    # nor boxes taller than this many tile rows (None: any): a model run beside another on a
    # grid finer in time reports only the bursts too short for the other's rows
    max_box_rows: Optional[int] = None
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
        if self.min_score > 0:
            d["thresholds"]["min_score"] = self.min_score
        if self.max_box_columns is not None:
            d["output"]["max_box_columns"] = self.max_box_columns
        if self.max_box_rows is not None:
            d["output"]["max_box_rows"] = self.max_box_rows
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
        max_cols, max_rows = ((d.get("output") or {}).get(k) for k in ("max_box_columns", "max_box_rows"))
        for key, v, what in (("max_box_columns", max_cols, "columns"), ("max_box_rows", max_rows, "rows")):
            need(v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 1),
                 f"output.{key} {v!r} must be a whole number of {what} >= 1")
        th = d.get("thresholds") or {}
        score = th.get("score", 0.5)
        need(_in_unit_interval(score), "thresholds.score must be in [0, 1]")
        min_score = th.get("min_score", 0.0)
        need(_in_unit_interval(min_score), f"thresholds.min_score {min_score!r} must be in [0, 1]")
        need(min_score <= score, f"thresholds.min_score {min_score!r} is over thresholds.score {score!r}: the "
                                 f"floor under every threshold cannot be above the card's own")
        known = {"schema", "name", "labels", "input", "spectrogram", "output", "thresholds", "metrics"}
        return cls(name=d["name"], labels=labels, input_shape=shape, spectrogram=spec, output_format=fmt,
                   input_name=inp.get("name", "tile"), score_threshold=float(score),
                   nms_iou=float(th.get("nms_iou", 0.5)), min_score=float(min_score), max_box_columns=max_cols,
                   max_box_rows=max_rows,
                   metrics=d.get("metrics") or {},
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
        elif self.input_shape[3] < params.width and params.width % self.input_shape[3] == 0:
            want[3] = self.input_shape[3]  # it sees the tile as frequency chunks of its width
        if list(self.input_shape) != want:
            raise ModelError(f"model {where} takes tiles of shape {self.input_shape}, but the Detector "
                             f"makes {want} (tile height {tile_height}, width {params.width})")


def _in_unit_interval(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1


def _model_base(path: Path) -> Path:
    """``dir/model`` for model.onnx, model.pt, model.engine / .trt / .plan and a rebuilt
    model.<gpu>-sm<cc>-trt<version>.<precision>.engine."""
    path = Path(path)
    m = ENGINE_CACHE_RE.match(path.stem) if path.suffix in ENGINE_SUFFIXES else None
    return path.with_name(m.group("base") if m else path.stem)


def card_for(path) -> Path:
    """The card of a model file; every format of one network, and an engine rebuilt
    for some GPU, share it."""
    base = _model_base(path)
    return base.with_name(base.name + ".card.json")


def onnx_beside(engine: Path) -> Path:
    base = _model_base(engine)
    return base.with_name(base.name + ".onnx")
