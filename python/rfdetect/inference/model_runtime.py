"""Loading detectors: the model card, the ``energy`` detector and ONNX Runtime models.

A model is any object with ``name``, ``labels`` and ``detect(tile) -> [PixelBox]``.
Model files travel with a card, ``<stem>.card.json`` beside ``<stem>.onnx``
(docs/model_card.md), that says which spectrogram the model was trained on; a model
whose card disagrees with the running spectrogram is refused, because it would
silently detect worse.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Optional

import numpy as np

from . import box_profile, carrier_detector, postprocess, pulse_detector
from .carrier_detector import CARRIER_SPECTROGRAM, CarrierConfigError, CarrierDetector
from .energy_detector import EnergyDetector, PixelBox
from .pulse_detector import PULSE_SPECTROGRAM, PULSE_TILE_ROWS, PulseConfigError, PulseDetector
from .model_card import ENGINE_CACHE_RE, ENGINE_SUFFIXES, ModelCard, ModelError, card_for, onnx_beside
from ..dsp.spectrogram import SpectrogramParams

BUILTIN_MODELS = ("energy", "pulse", "carrier")
# the embedded default: anchor_free, trained by rfdetect-train on rfdetect synth's realistic
# corpus (python/rfdetect/models/default/README.md has the data recipe and the command)
EMBEDDED_DIR = Path(__file__).resolve().parent.parent / "models"
DEFAULT_MODEL = EMBEDDED_DIR / "default" / "model.onnx"


def embedded_models() -> list:
    """Names of the models shipped in the package (``--model NAME``): ``default``, the
    earlier defaults kept loadable, and models made for one kind of capture (``narrowband``);
    each a folder under models/ with model.onnx (or, for a model that runs another's network
    on other settings, that model's: :func:`network_dir`), its card and a README."""
    if not EMBEDDED_DIR.is_dir():
        return []
    return sorted(d.name for d in EMBEDDED_DIR.iterdir() if runs_a_network(d, "model.onnx"))


def runs_a_network(folder: Path, pattern: str = "*.onnx") -> bool:
    """Whether ``folder`` is a model that can run: a file matching ``pattern`` in it, or in the
    folder whose network it runs (:func:`network_dir`); a broken companion is not one (naming
    it gives its error; tests/test_models.py checks the shipped ones)."""
    try:
        return any(network_dir(folder).glob(pattern))
    except ModelError:
        return False


def derived_from(folder: Path) -> Optional[str]:
    """The model whose network the model in ``folder`` runs (its card's ``derived_from``:
    docs/model_card.md), when the folder holds no model file of its own; else None."""
    folder = Path(folder)
    card = folder / "model.card.json"
    if not folder.is_dir() or not card.is_file() or any(f.suffix in FORMAT_BACKEND for f in folder.iterdir()):
        return None
    try:
        base = (json.loads(card.read_text()).get("derived_from") or {}).get("model")
    except (OSError, ValueError, AttributeError):
        return None  # the card's own loading names what is wrong with it
    return str(base) if base else None


def network_dir(folder: Path) -> Path:
    """Where the network of the model in ``folder`` is: ``folder``, or for a model whose card
    says it runs another's network (``derived_from``) and that ships no model file, the folder
    of that model beside it. The card stays the folder's own."""
    base = derived_from(folder)
    if base is None:
        return Path(folder)
    home = Path(folder).parent / base
    if derived_from(home) is not None or not home.is_dir():
        raise ModelError(f"model {folder}: its card runs the network of {base!r} (derived_from), but "
                         f"{home} is not a model folder with a network of its own")
    return home


AUTO_MODEL = "auto"
# models joined by this run together, as `rfdetect detect --model A --model B`: a branch per
# spectrogram into one NMS Merge (the web service's ``auto+pulse``, bench/quality.py's ``NAME=A+B``)
COMBINE = "+"
# ``auto`` picks narrowband for a capture both narrow and tuned below the cellular bands (VHF and
# UHF land-mobile: NBFM, AM, DMR-like TDMA, 433 MHz telemetry), the spectrum it was made for, and
# wideband for every other capture: its finer time grid keeps bursts a few rows apart (Wi-Fi
# frames, Bluetooth hops, LTE uplink slots) as separate boxes. Set from tuning recordings only
# (docs/runtime.md, "Which model `auto` runs"): narrowband led on every VHF/UHF tuning set and
# trailed or tied elsewhere, even at 2 MS/s; wideband (session 20) led default on 9 of the 12
# other tuning sets, tied one and was within 0.02 on the other two. default stays the
# Detector block's default: at its coarser grid a tile covers twice the time, so it sustains a
# higher real-time rate on a small CPU (40 MS/s against 25 on the 2-core Xeon: docs/training.md,
# session 20; 25 against 15 on the 2-core EPYC, session 44). The IQ Detector block
# (blocks.iq_detector), which reads the cards itself, runs ``auto`` by default.
NARROW_CAPTURE_MAX_RATE = 6.4e6
NARROW_CAPTURE_MAX_FREQ = 600e6


def auto_model(sample_rate: float, center_frequency: Optional[float]) -> str:
    """The embedded model ``auto`` stands for on a capture: ``narrowband`` for one of at most
    NARROW_CAPTURE_MAX_RATE samples/s centred below NARROW_CAPTURE_MAX_FREQ, else
    ``wideband`` (also when the centre frequency is not known); ``default`` where the
    chosen model is not in the package."""
    if not sample_rate or sample_rate <= 0:
        raise ModelError(f"model 'auto' picks a model by the capture's sample rate, and {sample_rate!r} is not one")
    have = embedded_models()
    narrow = center_frequency is not None and sample_rate <= NARROW_CAPTURE_MAX_RATE \
        and 0 < center_frequency < NARROW_CAPTURE_MAX_FREQ
    chosen = "narrowband" if narrow else "wideband"
    return chosen if chosen in have else "default"


# the models ``auto`` runs beside its choice, as (choice, model, lowest rate, highest rate,
# highest real-time rate; below): a
# detector on a finer grid, for what the choice's grid shows in a column or two (narrowband's
# network, whose cards keep only boxes of at most 12 of its columns) or in a row or two
# (wideband's, on rows half as long, whose card keeps only boxes of at most 64 rows); each
# reports nothing under its threshold (docs/model_card.md). Set from tuning recordings only
# (docs/runtime.md, "Models beside `auto`'s choice" and "`narrowband-zoom` beside `wideband`"):
# - narrowband-zoom (8 times finer: 2.4 kHz columns at 20 MS/s) beside wideband, for 12.5 kHz
#   TDMA, NBFM, AM and tones under two of wideband's 19.5 kHz columns: mean class-agnostic AP50
#   over the 10 tuning sets of 8-20 MS/s 0.673 -> 0.680 (t-mixed20b 0.70 -> 0.73). In this range
#   its columns (1-3 kHz) are those of narrowband's training grids;
# - narrowband-x2 (twice as fine) beside narrowband: mean over the 4 VHF/UHF tuning sets
#   0.456 -> 0.480 (5 MS/s 0.35 -> 0.42, where a TDMA channel is under two columns). From
#   1.6 MS/s, where its columns (rate / 2048) reach narrowband's training grids (0.78-6.25 kHz);
#   v_1M (1 MS/s) lost 0.005 with it;
# - wideband-short (rows of 25.6 us at 20 MS/s) beside wideband, for bursts of a few of
#   wideband's rows (BLE, drone telemetry, radar pulse trains): mean over the 10 tuning sets
#   of 8-20 MS/s 0.673 -> 0.687, and over the 3 of 2-5 MS/s 0.319 -> 0.383 (from 2 MS/s, the
#   lowest of those sets' rates); and beside narrowband (the drone telemetry bursts of VHF/UHF
#   captures), over the 7 VHF/UHF sets of 0.8-5 MS/s 0.592 -> 0.639, none down by more than
#   0.002 (v_1M 0.25 -> 0.54); from 0.8 MS/s, the lowest of those sets' rates;
# - pulse (the model-free detector on its own fine grid) beside narrowband, for radar pulses,
#   which no network's rows show at these rates: on the 3 VHF/UHF tuning sets with radar
#   (t-vhfr, t-vhfrad, t-vhfrad2) 0.620 -> 0.646 (t-vhfrad2 0.630 -> 0.691), and the other 3
#   sets from 1.6 MS/s (t-vhf3, t-vhf5, v_2M) within 0.001. From 1.6 MS/s: below it a
#   32-sample window is longer than most pulses, a swept pulse's band reads too narrow, and
#   the 1 and 1.5 MS/s sets lost 0.021 and 0.008 (docs/runtime.md, "`pulse` beside
#   `narrowband`").
# - carrier (the model-free detector of continuous carriers on its own 4096-bin grid) beside
#   narrowband, for NBFM, AM and keyed tones, which the networks were taught as background
#   with the receiver's lines: over the 10 VHF/UHF tuning sets of 0.8-5 MS/s 0.641 -> 0.661
#   (docs/runtime.md, "Continuous carriers"); from 0.8 MS/s, the lowest of those sets' rates.
#
# The last field: in real time (the IQ Detector's Companions Auto in real-time mode) a model
# runs beside the choice only up to that capture rate, where the choice and every model whose
# limit is at least as high kept up for 60 s with no tile dropped on this project's 2-core Xeon
# (bench/realtime.py --iq-detector --companions: docs/performance.md, sessions 46-49). So as the
# rate rises they drop out one by one, the one that adds least for its CPU first: beside
# narrowband, on the 6 VHF/UHF tuning sets of 3-6.4 MS/s (docs/runtime.md, "Real time: which
# companions keep up"), wideband-short added 0.01 above 2.8 MS/s for 0.3-0.36 of a core, while
# carrier, pulse and narrowband-x2 each added 0.04-0.13. 0: never in real time on 2 cores
# (narrowband-zoom costs about a second network). These limits were measured with the
# model-free detectors' compiled kernels; REALTIME_MAX_WITHOUT_KERNEL holds those measured
# without them, for an install whose kernel did not build. carrier at 6.4 MS/s, with its regions
# in its kernel (session 49), kept up for 60 s in one run and dropped tiles in two others.
AUTO_COMPANIONS = (("wideband", "narrowband-zoom", 8e6, 25e6, 0.0),
                   ("wideband", "wideband-short", 2e6, 25e6, 6e6),
                   ("narrowband", "narrowband-x2", 1.6e6, NARROW_CAPTURE_MAX_RATE, 3.6e6),
                   ("narrowband", "wideband-short", 0.8e6, NARROW_CAPTURE_MAX_RATE, 2.8e6),
                   ("narrowband", "pulse", 1.6e6, NARROW_CAPTURE_MAX_RATE, 4.8e6),
                   ("narrowband", "carrier", 0.8e6, NARROW_CAPTURE_MAX_RATE, 6e6))


# the real-time limits of pulse and carrier where their compiled kernel does not load (their
# NumPy code): the whole VHF/UHF row kept up to 2 MS/s with pulse's NumPy contrast (session 46),
# carrier alone beside narrowband to 5.6 MS/s with its NumPy power maps (session 48)
REALTIME_MAX_WITHOUT_KERNEL = {"pulse": (pulse_detector.KERNEL, 2e6), "carrier": (carrier_detector.KERNEL, 5.6e6)}


def _realtime_limit(model: str, limit: float) -> float:
    """AUTO_COMPANIONS' real-time ``limit`` of ``model``, or the lower one measured without
    its compiled kernel where that does not load (said once in the log by the kernel's loader)."""
    kernel, without = REALTIME_MAX_WITHOUT_KERNEL.get(model, (None, limit))
    return limit if kernel is None or kernel.load_or_none() is not None else min(limit, without)


def auto_models(sample_rate: float, center_frequency: Optional[float], n_samples: Optional[int] = None,
                companions: bool = True, realtime: bool = False) -> list:
    """The models ``auto`` stands for on a capture: :func:`auto_model`'s choice, then each
    model of AUTO_COMPANIONS beside it where the rate is in its range, it is in the package
    (or built in),
    ``companions`` holds (False: one spectrogram is forced on every model, and such a model
    runs only on its own) and the capture (``n_samples``, when known) fills at least one of its
    FFT windows. ``realtime``: only those that kept up at this rate on 2 cores (the last field
    of AUTO_COMPANIONS, or REALTIME_MAX_WITHOUT_KERNEL's where a kernel did not load)."""
    chosen = auto_model(sample_rate, center_frequency)
    out = [chosen]
    for choice, extra, low, high, live in AUTO_COMPANIONS if companions else ():
        if choice == chosen and low <= sample_rate <= high \
                and (not realtime or sample_rate <= _realtime_limit(extra, live)) \
                and (extra in BUILTIN_MODELS or extra in embedded_models()) \
                and (n_samples is None or n_samples >= _companion_fft_size(extra)):
            out.append(extra)
    return out


def _embedded_card(name: str) -> ModelCard:
    return ModelCard.load(EMBEDDED_DIR / name / "model.card.json")


def _companion_fft_size(name: str) -> int:
    """The FFT window of the spectrogram a model beside auto's choice runs on."""
    own = builtin_spectrogram(name) if name in BUILTIN_MODELS else None
    return (own or _embedded_card(name).spectrogram).fft_size


def _companion_labels(name: str) -> set:
    """What a model beside auto's choice can report: its labels and the label of what it
    cannot name."""
    if name in BUILTIN_MODELS:
        detector = {"pulse": PulseDetector, "carrier": CarrierDetector}.get(name)
        return set((detector() if detector else EnergyDetector(SpectrogramParams())).reported_labels())
    card = _embedded_card(name)
    return set(card.labels) | {str(card.extra.get("unknown_label", postprocess.DEFAULT_UNKNOWN_LABEL))}


def resolve_auto(entries, sample_rate: float, center_frequency: Optional[float], n_samples: Optional[int] = None,
                 companions: bool = True, realtime: bool = False) -> list:
    """``entries`` (model specs) with ``auto`` replaced by :func:`auto_models`' choice
    (:func:`_put_models`); other entries unchanged."""
    if not any(ModelSpec.parse(e).model == AUTO_MODEL for e in entries):
        return list(entries)
    return _put_models(entries, auto_models(sample_rate, center_frequency, n_samples, companions, realtime))


# auto's options that a model beside its choice takes too: where and how the networks run
_COMPANION_OPTIONS = ("backend", "device", "precision")


def _put_models(entries, chosen: list) -> list:
    """``entries`` with ``chosen[0]`` in place of each ``auto``, with all of auto's options, and
    each model beside it (``chosen[1:]``, on a grid of its own) once, after the first ``auto``,
    unless the entries name it already. A model beside it takes auto's backend, device and
    precision, and of auto's ``labels`` those it has (it is left out where it has none of
    them); its score threshold and name are its card's."""
    named = {ModelSpec.parse(e).model for e in entries}
    out = []
    for e in entries:
        spec = ModelSpec.parse(e)
        if spec.model != AUTO_MODEL:
            out.append(e)
            continue
        out.append(dict(e, model=chosen[0]) if isinstance(e, dict)
                   else chosen[0] + "".join(str(e).partition("?")[1:]))
        for extra in chosen[1:]:
            if extra in named:
                continue
            named.add(extra)
            companion = _companion(extra, spec)
            if companion is not None:
                out.append(companion if isinstance(e, dict) else _spec_text(companion))
    return out


def _companion(name: str, auto_spec: "ModelSpec") -> Optional[dict]:
    """The entry (a dict) of ``name`` running beside ``auto_spec``'s choice, or None where
    auto's ``labels`` leave it nothing to report."""
    out = {"model": name}
    out.update({k: getattr(auto_spec, k) for k in _COMPANION_OPTIONS if getattr(auto_spec, k) is not None})
    if auto_spec.labels:
        has = _companion_labels(name)
        labels = [lab for lab in auto_spec.labels if lab in has]
        if not labels:
            return None
        out["labels"] = labels
    return out


def _spec_text(entry: dict) -> str:
    """A dict entry as ``model?key=value&labels=a|b`` (ModelSpec.parse reads it back)."""
    opts = [f"{k}={'|'.join(v) if isinstance(v, list) else v}" for k, v in entry.items() if k != "model"]
    return entry["model"] + ("?" + "&".join(opts) if opts else "")


def resolve_auto_for_recording(entries, recording, companions: bool = True) -> tuple:
    """(``entries`` with ``auto`` resolved for a SigMF recording's rate, centre frequency and
    length, a line saying what ``auto`` chose and why, or None where no entry is ``auto``).
    ``companions``: False where one spectrogram is forced on every model (:func:`auto_models`)."""
    from ..formats.sigmf_io import SigMFRecording
    if not any(ModelSpec.parse(e).model == AUTO_MODEL for e in entries):
        return list(entries), None
    rec = SigMFRecording.open(recording)
    freq = rec.center_frequency if rec.frequency_known else None
    return resolve_auto_said(entries, rec.sample_rate, freq, rec.n_samples, companions,
                             unknown="centre frequency not in the recording")


def resolve_auto_said(entries, sample_rate: float, center_frequency: Optional[float],
                      n_samples: Optional[int] = None, companions: bool = True,
                      unknown: str = "centre frequency unknown", realtime: bool = False) -> tuple:
    """(:func:`resolve_auto`'s entries, a line saying what ``auto`` chose for this rate and
    centre frequency (``unknown``: the words for a missing one), or None where no entry is
    ``auto``)."""
    if not any(ModelSpec.parse(e).model == AUTO_MODEL for e in entries):
        return list(entries), None
    chosen = auto_models(sample_rate, center_frequency, n_samples, companions, realtime)
    where = f"{sample_rate / 1e6:g} MS/s at {center_frequency / 1e6:g} MHz" if center_frequency is not None \
        else f"{sample_rate / 1e6:g} MS/s, {unknown}"
    return _put_models(entries, chosen), f"model auto: {COMBINE.join(chosen)} ({where})"


def resolve_auto_for_recordings(entries, recordings) -> tuple:
    """:func:`resolve_auto_for_recording` over a set of recordings scored with one model
    (``rfdetect-train evaluate``, bench/quality.py): ``auto`` must mean one model for all."""
    results = [resolve_auto_for_recording(entries, r) for r in recordings] or [(list(entries), None)]
    picked = {tuple(map(str, res)) for res, _ in results}
    if len(picked) > 1:
        raise ModelError(f"model 'auto' picks different models for these recordings ({sorted(picked)}): "
                         f"evaluate them as separate sets, or name the model")
    return results[0]


# network inputs and outputs each output format needs (rfdetect.inference.postprocess)
_FORMAT_IO = {
    "boxes_scores_labels/1": (None, ["boxes", "scores", "labels"]),
    "dense_ltrb/1": (None, ["scores", "ltrb"]),
    "crop_classifier/1": (["crops", "geometry"], ["probs"]),
    "anchor_free/1": (None, ["objectness", "class_probs", "boxes"]),
}


class CardModel:
    """A trained detector: a backend that runs the network, the card that says what it
    is, and the format's pre/post-processing from :mod:`rfdetect.inference.postprocess`.

    A card whose input is narrower than the spectrogram (say 1024 of 4096 columns)
    makes the model see the tile as that many frequency chunks side by side; backends
    whose first dimension is dynamic take up to ``batch_size`` chunks per call (0:
    as many as free GPU memory allows, :func:`auto_batch`).
    """

    def __init__(self, backend, card: ModelCard, score_threshold: Optional[float] = None,
                 keep_labels: Optional[list] = None, name: Optional[str] = None, batch_size: int = 1):
        self.backend = backend
        self.card = card
        self.name = name or card.name
        self.labels = list(card.labels)
        self.format = card.output_format
        asked = card.score_threshold if score_threshold is None else float(score_threshold)
        self.score_threshold = max(asked, card.min_score)  # nothing under the card's floor, even for AP
        self.max_box_columns = card.max_box_columns
        self.max_box_rows = card.max_box_rows
        self.keep_labels = set(keep_labels) if keep_labels else None
        inputs, outputs = _FORMAT_IO[self.format]
        missing = [n for n in outputs if n not in backend.output_names]
        missing += [n for n in (inputs or []) if n not in backend.input_names]
        if missing:
            raise ModelError(f"model {backend.path} lacks {missing} required by its card's output "
                             f"format {self.format} (inputs {backend.input_names}, outputs "
                             f"{backend.output_names})")
        self.outputs = outputs
        self.chunk_width = int(card.input_shape[3])
        # the label rule (rfdetect.inference.postprocess.label_rule): a localised signal whose class
        # is uncertain is reported with this label instead of being dropped
        self.unknown_label = str(card.extra.get("unknown_label", postprocess.DEFAULT_UNKNOWN_LABEL))
        rule = card.extra.get("label_rule") or {}
        self.class_confidence = float(rule.get("class_confidence", postprocess.DEFAULT_CLASS_CONFIDENCE))
        try:
            self.score_rule = postprocess.check_score_rule(str(rule.get("score", postprocess.DEFAULT_SCORE_RULE)))
            self.class_region = postprocess.check_class_region(rule.get("class_region",
                                                                        postprocess.DEFAULT_CLASS_REGION))
        except ValueError as e:
            raise ModelError(f"model {self.name}: its card's {e}") from None
        # anchor_free/1: also suppress boxes lying this much inside a better one (0: IoU only)
        self.nms_contained = float((card.extra.get("anchor_free") or {}).get("nms_contained", 0.0))
        # anchor_free/1: the head's cells in pixels (rows, columns), for the class region
        af = card.extra.get("anchor_free") or {}
        self.cell_strides = (float(af["stride_y"]), float(af["stride_x"])) if "stride_y" in af else None
        if self.format == "anchor_free/1" and self.class_region > 0 and self.cell_strides is None:
            raise ModelError(f"model {self.name}: its card's label_rule.class_region needs anchor_free.stride_y "
                             f"and stride_x")
        # anchor_free/1: join boxes overlapping in time in nearly the same band (0: off)
        self.merge_band_iou = float((card.extra.get("anchor_free") or {}).get("merge_band_iou", 0.0))
        # anchor_free/1: each kept box the mean of the candidates overlapping it this much (0: off)
        try:
            self.box_vote = postprocess.check_box_vote(af.get("box_vote", 0.0))
        except ValueError as e:
            raise ModelError(f"model {self.name}: its card's {e}") from None
        # anchor_free/1: move box edges to where the energy ends (postprocess.refine_edges; 0: off)
        self.refine_edges = float((card.extra.get("anchor_free") or {}).get("refine_edges", 0.0))
        # anchor_free/1: boxes this many rows tall or more have their time edges refined too
        try:
            self.refine_min_rows = postprocess.check_refine_min_rows(
                af.get("refine_min_rows", postprocess.REFINE_MIN_SIZE))
            # anchor_free/1: boxes that are an emission's switching splatter go (0: off)
            self.splatter_db = postprocess.check_splatter_db(af.get("splatter_db", 0.0))
            # anchor_free/1: a strong signal filling little of its box snaps to its brightest
            # pixels (0: off)
            self.refine_peak_db = postprocess.check_refine_peak_db(af.get("refine_peak_db", 0.0))
            # anchor_free/1: a box over part of a chirp's sweep grows to the whole sweep, at
            # refine_peak_db's level (false: off)
            self.trace_lines = postprocess.check_trace_lines(af.get("trace_lines", False))
        except ValueError as e:
            raise ModelError(f"model {self.name}: its card's {e}") from None
        # anchor_free/1: boxes named from their time-averaged spectrum too (box_profile; absent: off)
        if "profile_classifier" in card.extra and self.format != "anchor_free/1":
            raise ModelError(f"model {self.name}: its card's profile_classifier applies to anchor_free/1, not "
                             f"{self.format}")
        try:
            self.profile = box_profile.ProfileClassifier.from_card(card.extra, len(self.labels),
                                                                   card.spectrogram.db_per_unit)
        except box_profile.ProfileError as e:
            raise ModelError(f"model {self.name}: its card's {e}") from None
        unknown = [lab for lab in (keep_labels or []) if lab not in self.labels + [self.unknown_label]]
        if unknown:
            raise ModelError(f"model {self.name}: labels {unknown} are not among its labels "
                             f"{self.labels + [self.unknown_label]}")
        # 0 (from free GPU memory) is settled on the first chunked call, the warm-up
        self.batch_size = int(batch_size) if backend.batch_dynamic else 1
        if self.format == "crop_classifier/1":
            opts = dict(card.extra.get("proposals") or {})
            self.proposer = EnergyDetector(card.spectrogram, **opts)
            self.crop_size = int(card.extra.get("crop_size", postprocess.CROP_SIZE))
        self.warmup_ms = None

    @property
    def backend_info(self) -> dict:
        b = self.backend
        return {"backend": b.kind, "device": b.device, "precision": b.precision, "file": str(b.path),
                "batch_size": self.batch_size}

    def warmup(self, tile_height: int) -> float:
        """Run the network once on a blank tile so the first real tile is not slow
        (lazy allocations, cuDNN/TensorRT tactic selection); returns milliseconds."""
        t0 = time.perf_counter()
        width = self.card.spectrogram.width
        if self.format == "crop_classifier/1":  # a blank tile has no proposals: feed one crop
            crops, geom = postprocess.letterbox_crops(np.zeros((tile_height, width), np.float32),
                                                      np.array([[0, 0, 8, 8]], np.float32), self.crop_size)
            self.backend.run({"crops": crops, "geometry": geom}, self.outputs)
        else:
            self.raw(np.zeros((tile_height, width), np.float32))
        self.warmup_ms = (time.perf_counter() - t0) * 1e3
        return self.warmup_ms

    def _run_chunks(self, x):
        """Tile [H, W] -> the network's outputs for each chunk of ``chunk_width``
        columns, as a list (one entry per chunk) of output lists."""
        h, width = x.shape
        n = width // self.chunk_width
        chunks = x.reshape(h, n, self.chunk_width).transpose(1, 0, 2)[:, None]
        name = self.backend.input_names[0]
        per_chunk = []
        if self.batch_size == 0:
            self.batch_size = auto_batch(self.backend, chunks[:1].nbytes, n)
        bs = self.batch_size
        for a in range(0, n, bs):
            out = self.backend.run({name: np.ascontiguousarray(chunks[a:a + bs])}, self.outputs)
            for i in range(len(chunks[a:a + bs])):
                per_chunk.append([o[i:i + 1] for o in out])
        return per_chunk

    def raw(self, tile: np.ndarray):
        """-> (boxes [N,4], scores [N], labels [N]) in tile pixels, before thresholds."""
        x = np.ascontiguousarray(tile, dtype=np.float32)
        if self.format == "crop_classifier/1":
            props = self.proposer.detect(x)
            if not props:
                return _NO_BOXES
            boxes = np.array([[b.x0, b.y0, b.x1, b.y1] for b in props], np.float32)
            crops, geom = postprocess.letterbox_crops(x, boxes, self.crop_size)
            (probs,) = self.backend.run({"crops": crops, "geometry": geom}, self.outputs)
            return postprocess.classify_proposals(probs, boxes, 0.0)
        if self.chunk_width == x.shape[1]:
            parts = [self.backend.run({self.backend.input_names[0]: x[None, None]}, self.outputs)]
        else:
            parts = self._run_chunks(x)
        found = []
        for i, out in enumerate(parts):
            if self.format == "dense_ltrb/1":
                boxes, scores, labels = postprocess.decode_dense(
                    out[0], out[1], int(self.card.extra["dense"]["stride"]), self.score_threshold,
                    self.card.nms_iou)
            elif self.format == "anchor_free/1":
                chunk = x[:, i * self.chunk_width:(i + 1) * self.chunk_width]
                reclassify = None if self.profile is None else partial(self.profile.combine, chunk)
                boxes, scores, labels = postprocess.decode_anchor_free(
                    out[0], out[1], out[2], self.score_threshold, self.card.nms_iou, self.class_confidence,
                    contained=self.nms_contained, merge_band_iou=self.merge_band_iou, score_rule=self.score_rule,
                    class_region=self.class_region, strides=self.cell_strides, box_vote=self.box_vote,
                    reclassify=reclassify)
                boxes, scores, labels = postprocess.refine_boxes(
                    chunk, boxes, scores, labels, self.refine_edges, self.card.nms_iou, self.refine_min_rows,
                    self.refine_peak_db, self.card.spectrogram.db_per_unit, self.trace_lines)
                boxes, scores, labels = postprocess.drop_splatter(
                    chunk, boxes, scores, labels, self.splatter_db, self.card.spectrogram.db_per_unit)
            else:
                boxes, scores, labels = out
                boxes, scores, labels = boxes.reshape(-1, 4), scores.reshape(-1), labels.reshape(-1)
            boxes = boxes + np.array([i * self.chunk_width, 0, i * self.chunk_width, 0], np.float32)
            found.append((boxes, scores, labels))
        if len(found) == 1:
            return found[0]
        return tuple(np.concatenate(parts) for parts in zip(*found))

    def detect(self, tile: np.ndarray) -> list[PixelBox]:
        boxes, scores, labels = self.raw(tile)
        out = []
        for (x0, y0, x1, y1), s, lab in zip(boxes, scores, labels):
            if s < self.score_threshold or not (x1 > x0 and y1 > y0):
                continue
            # after NMS on purpose: a wide box (a piece of a wideband signal at a fine grid) has
            # already suppressed the lower-scoring narrow boxes inside it (its subcarriers:
            # anchor_free.nms_contained), and now goes itself
            if self.max_box_columns is not None and x1 - x0 > self.max_box_columns:
                continue
            if self.max_box_rows is not None and y1 - y0 > self.max_box_rows:
                continue
            li = int(lab)
            if li == postprocess.UNKNOWN_LABEL:
                name = self.unknown_label
            else:
                name = self.labels[li] if 0 <= li < len(self.labels) else f"class_{li}"
            if self.keep_labels is not None and name not in self.keep_labels:
                continue
            out.append(PixelBox(float(x0), float(y0), float(x1), float(y1), float(s), name))
        return out

    def memory(self) -> dict:
        return self.backend.memory()


_NO_BOXES = (np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))


def auto_batch(backend, chunk_bytes: int, n_chunks: int) -> int:
    """Chunks per call from free GPU memory: activations of small detectors take a few
    hundred times their input; keep half the free memory for everything else."""
    mem = backend.memory()
    free = mem.get("gpu_bytes_free")
    if not free:
        return n_chunks
    return int(max(1, min(n_chunks, free // 2 // max(1, chunk_bytes * 400))))


class _BuiltinEntry:
    """A built-in detector as a model entry: its labels, an optional score floor and name."""

    def _as_entry(self, score_threshold, keep_labels, name):
        own = self.reported_labels()
        unknown = [lab for lab in (keep_labels or []) if lab not in own]
        if unknown:
            raise ModelError(f"the {self.name} model reports {', '.join(map(repr, own))}; "
                             f"labels {unknown} are not among them")
        self.keep = set(keep_labels or own)
        self.min_score = float(score_threshold or 0.0)
        if name:
            self.name = name

    @property
    def labels(self):
        return [lab for lab in self.reported_labels() if lab in self.keep]

    def detect(self, tile):
        return [b for b in super().detect(tile) if b.score >= self.min_score and b.label in self.keep]


class EnergyModel(_BuiltinEntry, EnergyDetector):
    """The energy detector as a model entry."""

    def __init__(self, params, score_threshold=None, keep_labels=None, name=None, **kw):
        EnergyDetector.__init__(self, params, **kw)
        self._as_entry(score_threshold, keep_labels, name)


class PulseModel(_BuiltinEntry, PulseDetector):
    """The pulse detector as a model entry."""

    def __init__(self, params, score_threshold=None, keep_labels=None, name=None):
        try:
            PulseDetector.__init__(self, params)
        except PulseConfigError as e:
            raise ModelError(str(e)) from None
        self._as_entry(score_threshold, keep_labels, name)


class CarrierModel(_BuiltinEntry, CarrierDetector):
    """The carrier detector as a model entry."""

    def __init__(self, params, tile_height: int, score_threshold=None, keep_labels=None, name=None):
        try:
            CarrierDetector.__init__(self, params)
            self.check_tile_height(tile_height)
        except CarrierConfigError as e:
            raise ModelError(str(e)) from None
        self._as_entry(score_threshold, keep_labels, name)


def builtin_spectrogram(name: str) -> Optional[SpectrogramParams]:
    """The spectrogram a built-in model must run on (``pulse``, ``carrier``: a grid of its
    own), or None for one that runs on whatever it is given (``energy``)."""
    return {"pulse": PULSE_SPECTROGRAM, "carrier": CARRIER_SPECTROGRAM}.get(name)


def builtin_tile_height(name: str) -> Optional[int]:
    """The tile height a built-in model runs on where it has a branch of its own (``pulse``:
    PULSE_TILE_ROWS), or None for one that takes the tile height it is given."""
    return {"pulse": PULSE_TILE_ROWS}.get(name)


def branch_tile_height(models: list, tile_height: int) -> int:
    """The tile height of a branch of ``models`` (Detector entries: names, specs or dicts):
    ``tile_height``, raised to a built-in detector's own (:func:`builtin_tile_height`) where
    every model of the branch has one. ``rfdetect detect``, the IQ Detector and
    ``rfdetect-train evaluate`` all size their branches' tiles by this."""
    own = [builtin_tile_height(ModelSpec.parse(m).model) for m in models]
    return max(int(tile_height), *own) if own and all(own) else int(tile_height)


# ------------------------------------------------------------------ model manager
# format -> backend; a folder or name is searched in this order (the first that loads wins)
# TensorRT engines go by three names: .engine (trtexec's examples, our export), .trt
# (the project card's word) and .plan (Triton's); all are the same serialised engine
FORMAT_BACKEND = {**{s: "tensorrt" for s in ENGINE_SUFFIXES}, ".onnx": "onnxruntime", ".pt": "pytorch",
                  ".pt2": "pytorch"}
FORMAT_PRIORITY = (*ENGINE_SUFFIXES, ".onnx", ".pt", ".pt2")
# model.<gpu>-sm<cc>-trt<version>.<precision>.engine: an engine rebuilt for one GPU
log = logging.getLogger("rfdetect.models")


@dataclass
class ModelSpec:
    """One entry of the Detector's model list: ``model`` ("default", "energy", a file,
    a folder, or a name in RFDETECT_MODEL_DIR) and its own options. Written as a dict,
    or as a string ``model?backend=pytorch&score=0.6&labels=ofdm|chirp&name=x``."""

    model: str
    backend: Optional[str] = None
    device: Optional[str] = None
    precision: Optional[str] = None
    score_threshold: Optional[float] = None
    labels: Optional[list] = None
    name: Optional[str] = None

    _KEYS = {"backend": "backend", "device": "device", "precision": "precision", "score": "score_threshold",
             "score_threshold": "score_threshold", "labels": "labels", "name": "name"}

    @classmethod
    def parse(cls, obj) -> "ModelSpec":
        if isinstance(obj, ModelSpec):
            return obj
        if isinstance(obj, dict):
            d = dict(obj)
            if "model" not in d:
                raise ModelError(f"model entry {obj!r} needs a \"model\" key")
            model = str(d.pop("model"))
            items = d.items()
        else:
            text = str(obj).strip()
            model, _, query = text.partition("?")
            items = [kv.split("=", 1) if "=" in kv else (kv, "") for kv in query.split("&") if kv]
        spec = cls(model=model.strip())
        for k, v in items:
            field_name = cls._KEYS.get(str(k).strip())
            if field_name is None:
                raise ModelError(f"model entry {obj!r}: unknown option {k!r} (known: {sorted(cls._KEYS)})")
            if field_name == "labels":  # "|" in a string: "," separates models in a list
                v = [x.strip() for x in v.split("|") if x.strip()] if isinstance(v, str) else list(v)
            elif field_name == "score_threshold":
                try:
                    v = float(v)
                except (TypeError, ValueError):
                    raise ModelError(f"model entry {obj!r}: score {v!r} is not a number") from None
            setattr(spec, field_name, v)
        if not spec.model:
            raise ModelError(f"model entry {obj!r} names no model")
        return spec


def _locate(spec: str) -> Path:
    if spec == AUTO_MODEL:
        raise ModelError("model 'auto' stands for the embedded model made for the capture's sample rate and centre "
                         "frequency, which only `rfdetect detect`, the web service and the IQ Detector block (given "
                         "samp_rate) know before the flowgraph is built; with the Detector block name the model "
                         "(default, narrowband, wideband, ...) and give the STFT Tile its card's spectrogram, or "
                         "use the IQ Detector block")
    if spec == "default":
        if not DEFAULT_MODEL.is_file():
            raise ModelError(f"the default model is missing from this installation ({DEFAULT_MODEL}); "
                             f"reinstall gr-rfdetect or give --model energy")
        return DEFAULT_MODEL.parent
    p = Path(spec)
    if p.exists():
        return p
    if spec in embedded_models():
        return EMBEDDED_DIR / spec
    base = os.environ.get("RFDETECT_MODEL_DIR")
    if base and (Path(base) / spec).exists():
        return Path(base) / spec
    where = f" (nor in RFDETECT_MODEL_DIR={base})" if base else " (set RFDETECT_MODEL_DIR to look up names)"
    raise ModelError(f"model not found: {spec!r}{where}; give 'energy', 'pulse', 'carrier', an embedded model "
                     f"({', '.join(embedded_models())}), a model file, or a folder holding model.onnx "
                     f"and model.card.json")


def model_card_file(spec: str, path: Optional[Path] = None) -> Path:
    """The card of model ``spec`` for the model file ``path`` found for it (default: the first
    of :func:`model_candidates`): the card beside the file, or the folder's own for a model that
    runs another's network (:func:`network_dir`)."""
    p = _locate(spec)
    if p.is_dir() and derived_from(p) is not None:
        return p / "model.card.json"
    return card_for(path if path is not None else model_candidates(spec)[0])


def model_candidates(spec: str, backends=("tensorrt", "onnxruntime", "pytorch")) -> list:
    """Model files for ``spec``, best first: a TensorRT engine (.engine > .trt > .plan) >
    .onnx > .pt, keeping the formats whose backend is in ``backends``. A file given by
    path is the only candidate of its format (an engine still falls back to the ONNX
    beside it when it will not load)."""
    p = _locate(spec)
    if p.is_file():
        if p.suffix not in FORMAT_BACKEND:
            raise ModelError(f"model {p}: unsupported format {p.suffix!r} (use one of {', '.join(FORMAT_PRIORITY)})")
        if FORMAT_BACKEND[p.suffix] not in backends:
            raise ModelError(f"model {p} needs the {FORMAT_BACKEND[p.suffix]} backend, but only "
                             f"{list(backends)} are allowed here (backend / RFDETECT_BACKEND)")
        cands = [p]
        if p.suffix in ENGINE_SUFFIXES and "onnxruntime" in backends and onnx_beside(p).is_file():
            cands.append(onnx_beside(p))
        return cands
    p = network_dir(p)
    cands = []
    if "tensorrt" in backends:
        engines = [f for ext in ENGINE_SUFFIXES for f in sorted(p.glob("*" + ext))]
        # an engine rebuilt for some GPU sorts after those exported with the model (stable sort)
        cands += sorted(engines, key=lambda f: ENGINE_CACHE_RE.match(f.stem) is not None)
    for ext in FORMAT_PRIORITY:
        if FORMAT_BACKEND[ext] in backends and FORMAT_BACKEND[ext] != "tensorrt":
            cands += sorted(p.glob("*" + ext))
    if not cands:
        have = sorted({f.suffix for f in p.iterdir() if f.suffix in FORMAT_BACKEND})
        raise ModelError(f"model folder {p} holds no model for backends {list(backends)} "
                         f"(it has {have or 'no model files'})")
    return cands


def open_engine(path: Path, device: str, precision: str, load=None, build=None, cache_path=None):
    """Load a TensorRT engine; when it does not load here (another GPU or TensorRT
    version), use or build the engine for this GPU from the ONNX beside it, saying so.
    ``build(onnx, out)`` builds and validates; an engine that fails either, or does
    not load once built, is deleted (a later start would otherwise load it unchecked)
    and the failure is a BackendError, so the caller goes on to the next format.
    ``load``/``build``/``cache_path`` default to rfdetect.inference.tensorrt_backend's."""
    if load is None:
        from . import tensorrt_backend as trtb

        def load(p, dev, prec):
            return trtb.TensorRTBackend(p, dev, prec)

        def build(onnx, out):
            trtb.build_engine(onnx, fp16=precision == "fp16", out_path=out, device=device)
            trtb.validate_engine(out, onnx, device=device, remove_on_failure=False)  # removed below

        def cache_path(onnx):
            return trtb.engine_cache_path(onnx, device, precision == "fp16")
    from ..gpu import BackendError, GpuUnavailable
    try:
        return load(path, device, precision)
    except GpuUnavailable:  # no TensorRT or GPU here at all: the caller tries the next format
        raise
    except BackendError as e:
        reason = str(e)
    onnx = onnx_beside(path)
    if not onnx.is_file():
        raise ModelError(f"{reason}; no {onnx.name} beside it to rebuild the engine from")
    cached = cache_path(onnx)
    if cached != path and cached.is_file():
        try:
            b = load(cached, device, precision)
            log.warning("engine %s does not load here; using %s built earlier for this GPU", path, cached)
            return b
        except GpuUnavailable:
            raise
        except BackendError as e:
            log.warning("cached engine %s does not load either (%s): rebuilding it", cached, e)
    log.warning("engine %s does not load here (%s): rebuilding from %s into %s (takes a while, once)",
                path, reason, onnx, cached)
    try:
        build(onnx, cached)
        return load(cached, device, precision)
    except BaseException as e:
        cached.unlink(missing_ok=True)
        if isinstance(e, BackendError) or not isinstance(e, Exception):
            raise
        raise BackendError(f"building a TensorRT engine from {onnx} failed ({type(e).__name__}: "
                           f"{(str(e).splitlines() or [''])[0][:200]})") from e


def open_backend(path: Path, profile):
    from .backends import OnnxBackend, TorchBackend
    kind = FORMAT_BACKEND[path.suffix]
    if kind == "tensorrt":
        return open_engine(path, profile.device, profile.precision)
    if path.stat().st_size == 0:
        raise ModelError(f"model {path} is empty")
    cls = OnnxBackend if kind == "onnxruntime" else TorchBackend
    return cls(path, profile.device, profile.precision, intra_threads=profile.cpu_threads)


def load_model(spec, params: SpectrogramParams, tile_height: int,
               score_threshold: Optional[float] = None, profile=None):
    """Load one model entry (string or :class:`ModelSpec`) for these spectrogram
    settings: the first candidate file that loads here, its backend from the profile
    (rfdetect.inference.hardware_profile); refuses models whose card does not fit ``params``."""
    from ..gpu import BackendError
    from .hardware_profile import env_score_threshold, resolve_profile
    ms = ModelSpec.parse(spec)
    score = ms.score_threshold if ms.score_threshold is not None else score_threshold
    if score is None:
        score = env_score_threshold()
    if ms.model == "pulse":
        return PulseModel(params, score_threshold=score, keep_labels=ms.labels, name=ms.name)
    if ms.model == "carrier":
        return CarrierModel(params, tile_height, score_threshold=score, keep_labels=ms.labels, name=ms.name)
    if ms.model in BUILTIN_MODELS:
        return EnergyModel(params, score_threshold=score, keep_labels=ms.labels, name=ms.name)
    prof = (profile or resolve_profile()).with_overrides(ms.backend, ms.device, ms.precision)
    skipped = []
    for path in model_candidates(ms.model, prof.backends):
        card = ModelCard.load(model_card_file(ms.model, path))
        card.check_compatible(params, tile_height, str(path))
        try:
            backend = open_backend(path, prof)
        except BackendError as e:  # TensorRT missing, no GPU for PyTorch...: next format
            skipped.append(f"{path.name}: {e}")
            continue
        if skipped:
            log.warning("model %s: using %s (%s); skipped %s", ms.model, path.name, backend.kind, "; ".join(skipped))
        model = CardModel(backend, card, score, keep_labels=ms.labels, name=ms.name, batch_size=prof.batch_size)
        model.warmup(tile_height)
        return model
    raise ModelError(f"model {ms.model!r}: no format loads here ({'; '.join(skipped)})")
