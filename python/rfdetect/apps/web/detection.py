"""Uploads -> the existing detect path.

A spectrogram tile (PNG/JPEG) goes to the model the Detector block would load
(:func:`load_model`); a SigMF recording or raw IQ goes through the whole file-mode
flowgraph of ``rfdetect detect`` (:func:`run_detect`), so the service returns what the
command gives for the same samples.
"""
from __future__ import annotations

import io
import json
import re
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

import numpy as np

from ...dsp.spectrogram import SpectrogramConfigError, SpectrogramParams
from ...formats.record_outputs import ANNOTATED_EVENTS
from ...formats.records import read_jsonl
from ...formats.sigmf_io import (RecordingError, SigMFRecording, atomic_write_bytes, atomic_write_json,
                                 new_meta, parse_datatype)
from ...inference.model_card import ModelCard, card_for
from ...inference.model_runtime import (AUTO_MODEL, BUILTIN_MODELS, COMBINE, ModelError, builtin_spectrogram,
                                        embedded_models, load_model, model_candidates, model_card_file,
                                        resolve_auto_for_recording, runs_a_network)
from ...inference.tile_detector import TileAssembler

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def builtin_models() -> tuple:
    """``auto`` (recordings only: the embedded model made for the capture, as `rfdetect
    detect` picks it), ``default``, the model-free detectors (``energy``, ``pulse``,
    ``carrier``) and the package's other embedded models."""
    return (AUTO_MODEL, "default", *BUILTIN_MODELS, *(m for m in embedded_models() if m != "default"))


def split_models(name: str) -> list:
    """``A+B`` -> [A, B]; one name -> [name]. An empty part or a model named twice is a BadInput."""
    parts = [p.strip() for p in str(name).split(COMBINE)]
    if any(not p for p in parts):
        raise BadInput(f"model {name!r}: an empty name; join models with '{COMBINE}', e.g. auto{COMBINE}pulse")
    if len(set(parts)) != len(parts):
        raise BadInput(f"model {name!r}: a model named twice")
    return parts


class BadInput(ValueError):
    """An upload or parameter that cannot be used: HTTP 400 with this message."""


class UnknownModel(LookupError):
    """HTTP 404."""


# ------------------------------------------------------------------ models
class ModelRegistry:
    """The models the service offers: ``default``, ``energy``, the other embedded models and each model under
    ``--models`` (a folder ``NAME/`` holding ``*.onnx`` + card, or ``NAME.onnx`` +
    ``NAME.card.json``). Names only: a client never gives a path."""

    def __init__(self, models_dir: Optional[Path]):
        self.models_dir = Path(models_dir) if models_dir else None

    def local(self) -> dict:
        out = {}
        d = self.models_dir
        if not d or not d.is_dir():
            return out
        for p in sorted(d.iterdir()):
            if p.is_dir() and NAME_RE.match(p.name) and runs_a_network(p) and any(p.glob("*.card.json")):
                out[p.name] = p
            elif p.suffix == ".onnx" and NAME_RE.match(p.stem) and card_for(p).is_file():
                out.setdefault(p.stem, p)
        return out

    def names(self) -> list:
        builtin = builtin_models()
        return list(builtin) + [n for n in self.local() if n not in builtin]

    def spec(self, name: str) -> str:
        """The spec ``rfdetect detect --model`` takes for ``name`` (models joined by '+': each
        checked, joined the same way)."""
        if COMBINE in name:
            return COMBINE.join(self.spec(n) for n in split_models(name))
        if name in builtin_models():
            return name
        p = self.local().get(name)
        if p is None:
            raise UnknownModel(f"unknown model {name!r}; known: {', '.join(self.names())}")
        return str(p)

    def card(self, name: str) -> Optional[ModelCard]:
        spec = self.spec(split_models(name)[0])
        if spec in (*BUILTIN_MODELS, AUTO_MODEL):  # auto: the card of the model it picks for each recording
            return None
        return ModelCard.load(model_card_file(spec, model_candidates(spec, ("onnxruntime", "pytorch"))[0]))

    def card_dict(self, name: str) -> Optional[dict]:
        c = self.card(name)
        return None if c is None else c.to_dict()

    def settings(self, name: str) -> tuple:
        """(SpectrogramParams, tile_height) the model was trained on (the first of models joined
        by '+'; energy: the defaults; pulse, carrier: a grid of its own)."""
        c = self.card(name)
        if c is None:
            return builtin_spectrogram(split_models(name)[0]) or SpectrogramParams(), 1024
        return c.spectrogram, int(c.input_shape[2])


# ------------------------------------------------------------------ tiles
def decode_image(data: bytes) -> np.ndarray:
    """A grayscale spectrogram PNG/JPEG -> float32 [0, 1] (16-bit PNGs keep their depth)."""
    from PIL import Image, UnidentifiedImageError
    if not data:
        raise BadInput("image: the upload is empty")
    try:
        im = Image.open(io.BytesIO(data))
        im.load()
    except UnidentifiedImageError:
        raise BadInput(f"image: not a PNG or JPEG image (its first bytes: {data[:8]!r})") from None
    except (OSError, ValueError) as e:  # a PNG/JPEG header with a broken body
        raise BadInput(f"image: a broken image ({e})") from None
    if im.format not in ("PNG", "JPEG"):
        raise BadInput(f"image: {im.format} images are not accepted, only PNG or JPEG")
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, dtype=np.float64) / 65535.0
    else:
        a = np.asarray(im.convert("L"), dtype=np.float64) / 255.0
    if a.ndim != 2 or min(a.shape) < 8:
        raise BadInput(f"image: {a.shape[::-1]} pixels is too small to hold a spectrogram tile")
    return np.clip(a, 0.0, 1.0).astype(np.float32)


class TileDetectors:
    """Models loaded for tiles, kept between requests (loading warms them up)."""

    def __init__(self, registry: ModelRegistry):
        self.registry = registry
        self._cache = {}
        self._lock = threading.Lock()

    def _params_for(self, name, width, height, fft_size=None, hop=None):
        if name == "energy":
            fft = fft_size or max(4096, 1 << int(np.ceil(np.log2(width))))
            try:
                return SpectrogramParams(fft_size=fft, hop=hop or fft // 2, width=width), height
            except SpectrogramConfigError as e:
                raise BadInput(f"image: {width} pixels wide does not fit a spectrogram row: {e}") from None
        if builtin_spectrogram(name) is not None:  # pulse, carrier: plain-dB rows of their own grid, not an image
            raise BadInput(f"model {name!r} reads plain-dB rows of a spectrogram of its own, not an image tile: "
                           f"send it a recording (meta + data, or an archive)")
        params, card_height = self.registry.settings(name)
        if width != params.width:
            raise BadInput(f"image: model {name!r} takes tiles {params.width} pixels wide (its card's spectrogram "
                           f"width), this image is {width} wide")
        # a crop classifier takes tiles of any height; other networks have a fixed input
        fixed = self.registry.card(name).output_format != "crop_classifier/1"
        return params, card_height if fixed else height

    def detect(self, name: str, tile: np.ndarray, threshold: Optional[float], fft_size=None, hop=None):
        if COMBINE in name:
            raise BadInput(f"model {name!r}: a tile takes one model; models joined by '{COMBINE}' run on recordings "
                           f"(each on its own spectrogram)")
        if name == AUTO_MODEL:  # a tile has no sample rate or centre frequency to pick by
            name = "default"
        spec = self.registry.spec(name)  # UnknownModel before anything else
        h, w = tile.shape
        params, height = self._params_for(name, w, h, fft_size, hop)
        key = (name, params, height)
        with self._lock:
            model = self._cache.get(key)
            if model is None:
                try:
                    model = load_model(spec, params, height, score_threshold=0.0)
                except ModelError as e:
                    raise BadInput(f"model {name!r} cannot take this tile: {e}") from None
                self._cache[key] = model
            if threshold is None:
                card = self.registry.card(name)
                threshold = card.score_threshold if card is not None else 0.0
            t0 = time.perf_counter()
            found = []
            # an image of another height than the model's input: cut into the model's tiles
            # the way the Detector cuts rows (the last one padded by mirroring its rows)
            chunks = TileAssembler(height, w, 0)
            parts = chunks.push(tile)
            last = chunks.flush()
            for part, row0, valid in [(t, r, height) for t, r in parts] + ([last] if last else []):
                found += [(b, row0, valid) for b in model.detect(part)]
            ms = (time.perf_counter() - t0) * 1e3
        out = [{"bbox": {"x_min": float(b.x0), "y_min": float(row0 + max(b.y0, 0.0)), "x_max": float(b.x1),
                         "y_max": float(row0 + min(b.y1, valid))},
                "confidence": float(b.score), "signal_name": b.label, "model": name}
               for b, row0, valid in found if b.score >= threshold and b.y0 < valid]
        out.sort(key=lambda d: (d["bbox"]["y_min"], d["bbox"]["x_min"]))
        return out, ms


# ------------------------------------------------------------------ recordings
IQENGINE_TYPES = {"iq/cf32_le": "cf32_le", "iq/ci16_le": "ci16_le", "iq/ci8": "ci8", "iq/ci8_le": "ci8"}


def sigmf_datatype(text: str) -> str:
    """IQEngine's ``iq/cf32_le`` or SigMF's ``cf32_le`` -> a SigMF datatype this package reads."""
    dt = IQENGINE_TYPES.get(str(text), str(text))
    try:
        parse_datatype(dt)
    except (RecordingError, ValueError) as e:
        raise BadInput(f"data_type {text!r} is not supported ({e})") from None
    return dt


def write_raw_recording(folder: Path, base: str, raw_path: Path, datatype: str, sample_rate: float,
                        center_freq: float) -> Path:
    """Raw IQ samples (already on disk) + their metadata -> a SigMF recording in ``folder``."""
    dt = sigmf_datatype(datatype)
    if not (np.isfinite(sample_rate) and sample_rate > 0):
        raise BadInput(f"sample_rate {sample_rate!r} must be a positive number of Hz")
    if not np.isfinite(center_freq):
        raise BadInput(f"center_freq {center_freq!r} must be a number of Hz")
    size = raw_path.stat().st_size
    comp, _, _ = parse_datatype(dt)
    if size == 0 or size % (2 * comp.itemsize):
        raise BadInput(f"iq_file: {size} bytes is not a whole number of {dt} samples "
                       f"({2 * comp.itemsize} bytes each)")
    data = folder / f"{base}.sigmf-data"
    raw_path.replace(data)
    meta = new_meta(sample_rate, dt, center_freq, description="uploaded to rfdetect serve")
    atomic_write_json(folder / f"{base}.sigmf-meta", meta)
    return folder / f"{base}.sigmf-meta"


def unpack_upload(folder: Path, meta_bytes: Optional[bytes], data_path: Optional[Path],
                  archive_path: Optional[Path]) -> Path:
    """A SigMF upload (meta + data parts, or a ``.sigmf`` archive) -> the meta path in ``folder``."""
    if archive_path is not None:
        try:
            with tarfile.open(archive_path) as tf:
                members = [m for m in tf.getmembers() if m.isfile()]
                metas = [m for m in members if m.name.endswith(".sigmf-meta")]
                datas = [m for m in members if m.name.endswith(".sigmf-data")]
                if len(metas) != 1 or len(datas) != 1:
                    raise BadInput(f"archive: a .sigmf archive holds one .sigmf-meta and one .sigmf-data "
                                   f"(this one has {len(metas)} and {len(datas)})")
                for m, suffix in ((metas[0], ".sigmf-meta"), (datas[0], ".sigmf-data")):
                    with tf.extractfile(m) as src, open(folder / f"upload{suffix}", "wb") as dst:
                        while chunk := src.read(1 << 20):
                            dst.write(chunk)
        except tarfile.TarError as e:
            raise BadInput(f"archive: not a .sigmf (tar) archive ({e})") from None
    else:
        if meta_bytes is None or data_path is None:
            raise BadInput("a SigMF upload needs both parts, 'meta' (.sigmf-meta) and 'data' (.sigmf-data), "
                           "or one 'archive' (.sigmf)")
        try:
            json.loads(meta_bytes)
        except ValueError as e:
            raise BadInput(f"meta: not JSON ({e})") from None
        atomic_write_bytes(folder / "upload.sigmf-meta", meta_bytes)
        data_path.replace(folder / "upload.sigmf-data")
    meta = folder / "upload.sigmf-meta"
    try:
        rec = SigMFRecording.open(meta)
        if rec.n_samples == 0:
            raise BadInput("data: the recording holds no samples")
    except RecordingError as e:
        raise BadInput(f"recording: {e}") from None
    return meta


# the request settings that set the spectrogram (RecordingDetector.options)
_SPECTROGRAM_SETTINGS = ("fft_size", "hop", "width")


class RecordingDetector:
    """Runs ``rfdetect detect``'s flowgraph on a recording, one run at a time."""

    def __init__(self, registry: ModelRegistry):
        self.registry = registry
        self._lock = threading.Lock()

    def options(self, name: str, threshold=None, fft_size=None, hop=None, width=None, tile_height=None,
                overlap=None):
        """The DetectOptions ``rfdetect detect --model NAME`` would use (settings from the card;
        given values override them), as (spec, DetectOptions)."""
        from ..detect_flowgraph import DetectOptions
        specs = self.registry.spec(name).split(COMBINE)
        params, height = self.registry.settings(name)
        try:
            params = SpectrogramParams(**{**params.to_dict(), **{k: v for k, v in
                                          (("fft_size", fft_size), ("hop", hop), ("width", width)) if v}})
        except SpectrogramConfigError as e:
            raise BadInput(str(e)) from None
        height = int(tile_height or height)
        ov = int(overlap if overlap is not None else min(128, height // 8))
        if not (8 <= height <= 8192 and 0 <= ov < height):
            raise BadInput(f"tile_height {height} / overlap {ov}: need 8 <= tile_height <= 8192 and 0 <= overlap < it")
        models = [s if threshold is None else f"{s}?score={float(threshold)}" for s in specs]
        # several models: each on the spectrogram of its card, the first on ``params``
        return DetectOptions(models=models, params=params, tile_height=height, overlap=ov, echo=False,
                             by_card=len(models) > 1)

    def resolve(self, meta_path: Path, name: str, **settings) -> str:
        """``name``, with ``auto`` (alone or joined by '+') the embedded models made for this
        recording. Given spectrogram ``settings`` (fft_size, hop, width) make ``auto`` one model,
        as ``rfdetect detect --hop N`` does, so that one request means the same here and there
        (a model beside auto's choice is made for its own card's grid)."""
        names = split_models(name)
        if AUTO_MODEL not in names:
            return name
        forced = any(settings.get(k) for k in _SPECTROGRAM_SETTINGS)
        try:
            return COMBINE.join(resolve_auto_for_recording(names, meta_path, companions=not forced)[0])
        except (ModelError, RecordingError) as e:
            raise BadInput(f"model 'auto': {e}") from None

    def run(self, meta_path: Path, name: str, workdir: Path, **settings) -> dict:
        """-> {"records", "annotations", "params", "tile_height", "sample_rate", "center_freq", "timing_ms",
        "model" (the model run: ``auto`` resolved)}."""
        from ..detect_flowgraph import run_detect
        name = self.resolve(meta_path, name, **settings)
        opt = self.options(name, **settings)
        opt.out = str(workdir / "detections.jsonl")
        opt.sigmf_out = str(workdir / "detected")
        t0 = time.perf_counter()
        with self._lock:
            try:
                run_detect(str(meta_path), opt, handle_signals=False)
            except ModelError as e:
                raise BadInput(f"model {name!r}: {e}") from None
            except (RecordingError, SpectrogramConfigError) as e:
                raise BadInput(f"recording: {e}") from None
        ms = (time.perf_counter() - t0) * 1e3
        records = [r for r in read_jsonl(opt.out) if r.get("event", "detection") in ANNOTATED_EVENTS]
        out_meta = json.loads(Path(opt.sigmf_out + ".sigmf-meta").read_text())
        annotations = [a for a in out_meta.get("annotations", []) if a.get("core:generator") == "gr-rfdetect"]
        rec = SigMFRecording.open(meta_path)
        return {"records": records, "annotations": annotations, "params": opt.params, "tile_height": opt.tile_height,
                "sample_rate": rec.sample_rate, "center_freq": rec.center_frequency, "timing_ms": ms, "model": name}


def record_to_detection(r: dict, params: SpectrogramParams, sample_rate: float, center_freq: float) -> dict:
    """A detection record -> the /detect response's shape (+ seconds and absolute Hz);
    bbox in spectrogram pixels of the whole recording (rows from its first sample)."""
    x0 = float(params.offset_hz_to_column(r["f_low"] - center_freq, sample_rate))
    x1 = float(params.offset_hz_to_column(r["f_high"] - center_freq, sample_rate))
    y0 = float(params.sample_to_row(r["sample_start"]))
    y1 = float(params.sample_to_row(r["sample_start"] + r["sample_count"]))
    return {"bbox": {"x_min": round(x0, 2), "y_min": round(y0, 2), "x_max": round(x1, 2), "y_max": round(y1, 2)},
            "confidence": float(r["score"]), "signal_name": r["label"],
            "models": list(r.get("models") or [r["model"]]),
            "t_start": float(r["t_start"]), "t_stop": float(r["t_stop"]), "f_low": float(r["f_low"]),
            "f_high": float(r["f_high"]), "sample_start": int(r["sample_start"]),
            "sample_count": int(r["sample_count"]), "track_id": r.get("track_id")}


def scratch_dir(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="req-", dir=root))
