"""prepare (the "ChunkWorker"): labelled SigMF recordings -> tile PNGs + bbox JSON + COCO.

Tiles come from the same code as the Detector block's: rfdetect.dsp.spectrogram
(StreamingSpectrogram over the recording in chunks, so memory stays bounded) and
rfdetect.inference.tile_detector.TileAssembler (the same tile height, overlap, and padded
last tile). Tile ``i`` of a recording is therefore the tile the Detector sees as its
tile ``i`` for the same samples (tests/test_training.py checks it file for file).

Per tile: ``<stem>_<iiii>.png`` (16-bit grayscale, rfdetect.formats.tile_io) and
``<stem>_<iiii>.json``::

    {"image": "<stem>_0000.png", "width": 1024, "height": 1024,
     "bboxes": [{"label": "ofdm", "x_min": .., "y_min": .., "x_max": .., "y_max": ..}],
     "source": {"recording": ..., "row_start": .., "rows": .., "sample_rate": ..,
                "center_freq": ..}}

Boxes are in pixels (x: columns, y: rows, continuous edges). A signal smaller than
the spectrogram can show (a pulse shorter than MIN_BOX_PIXELS rows, a tone narrower
than MIN_BOX_PIXELS columns) is boxed at that size about its centre, and such boxes of
one label that then overlap are one box (``resolvable_boxes``; evaluation scores
against the same truth). A box crossing a tile edge is clipped to the tile (to the
valid rows of the last, padded tile); what is left is dropped when it is narrower or
shorter than MIN_BOX_PIXELS (a sliver carries no shape to learn from). Tiles without
boxes are kept: they teach "nothing here".

Documented skips (listed in dataset.json under "skipped", and printed): annotations
without ``core:label`` or without a sample range, recordings without any labelled
annotation, recordings that cannot be read (corrupt, truncated, NaN samples).
"""
from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from gnuradio.rfdetect.formats.sigmf_io import RecordingError, SigMFRecording, atomic_write_json, find_sigmf_files
from gnuradio.rfdetect.dsp.spectrogram import SpectrogramEngine, SpectrogramParams, StreamingSpectrogram
from gnuradio.rfdetect.inference.tile_detector import TileAssembler
from gnuradio.rfdetect.tracking.nms_merge import UNKNOWN_LABEL, labels_agree
from gnuradio.rfdetect.formats.tile_io import write_tile_png

from .progress import progress_bar

MIN_BOX_PIXELS = 2.0
# evaluation's truth: "resolvable" = resolvable_boxes of the annotations, "exact" = as written
TRUTH_RULES = ("resolvable", "exact")
DATASET_SCHEMA = "rfdetect.tiles/1"


class DataError(ValueError):
    """Training data that cannot be used, with the reason."""


@dataclass
class PrepareOptions:
    params: SpectrogramParams = field(default_factory=SpectrogramParams)
    tile_height: int = 1024
    overlap: int = 128
    chunk_samples: int = 1 << 20
    # train on these labels only; annotations of other labels are left unboxed, so training
    # teaches them as background (a detector for one family among many). None: every label.
    labels: Optional[tuple] = None


def find_recordings(data_dir) -> list[Path]:
    d = Path(data_dir)
    if not d.is_dir():
        raise DataError(f"--data {d}: not a folder")
    recs = find_sigmf_files(d)
    if not recs:
        raise DataError(f"--data {d}: no SigMF recordings (*.sigmf-meta or *.sigmf) in it")
    return recs


def check_labels(recs: list[Path], labels, data_dir) -> None:
    """Refuses a label filter that names no label of the recordings (a typo would otherwise
    train a detector of nothing), naming the labels they do have; before any tile is written."""
    if not labels:
        raise DataError("--labels: give at least one label")
    have = set()
    for path in recs:
        try:
            have.update(b["label"] for b in labelled_boxes(SigMFRecording.open(path))[0])
        except RecordingError:
            continue  # prepare says why it skips it
    missing = [lab for lab in labels if lab not in have]
    if missing:
        raise DataError(f"--labels: {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} in no recording of "
                        f"{data_dir} (its labels: {', '.join(sorted(have)) or 'none'})")


def labelled_boxes(rec: SigMFRecording) -> tuple[list[dict], list[str]]:
    """-> (boxes in samples and absolute Hz, reasons for annotations skipped)."""
    boxes, skipped = [], []
    fs = rec.sample_rate
    for i, a in enumerate(rec.annotations):
        label = a.get("core:label")
        s0, n = a.get("core:sample_start"), a.get("core:sample_count")
        if not isinstance(label, str) or not label.strip():
            skipped.append(f"annotation {i}: no core:label")
            continue
        if not isinstance(s0, int) or not isinstance(n, int) or n <= 0:
            skipped.append(f"annotation {i} ({label}): no core:sample_start/core:sample_count")
            continue
        fc = rec.capture_at(s0).frequency
        lo = a.get("core:freq_lower_edge", fc - fs / 2)
        hi = a.get("core:freq_upper_edge", fc + fs / 2)
        if not (isinstance(lo, (int, float)) and isinstance(hi, (int, float)) and hi > lo):
            skipped.append(f"annotation {i} ({label}): bad frequency edges")
            continue
        boxes.append({"label": label.strip(), "s0": s0, "s1": s0 + n, "f0": float(lo), "f1": float(hi)})
    return boxes, skipped


def resolvable_boxes(boxes: list[dict], min_length: float, min_width: float,
                     keys=("s0", "s1", "f0", "f1")) -> list[dict]:
    """Truth boxes as a spectrogram can show them. A box shorter than ``min_length`` or
    narrower than ``min_width`` (the same units as its ``keys``: start, stop, low edge,
    high edge) is widened to that size about its centre (moved to start at 0 rather than
    before it), and widened boxes of one label that then overlap become their union,
    transitively: radar pulses 1.5 rows apart are one smear in the spectrogram and one
    box here (a found box named "signal" joins one of any label:
    _same_smear_label). Other boxes are unchanged. Why: a labelled signal with no box in a training
    tile is taught as background (29 % of the realistic corpus's boxes were: short
    hops, pulses, tones), and a detector cannot box, at IoU 0.5, a pulse a tenth of a
    row long."""
    t0, t1, f0, f1 = keys
    kept, grown = [], []
    for b in boxes:
        b = dict(b)
        widened = False
        for lo, hi, least in ((t0, t1, min_length), (f0, f1, min_width)):
            if b[hi] - b[lo] < least:
                c = 0.5 * (b[lo] + b[hi])
                b[lo], b[hi] = c - 0.5 * least, c + 0.5 * least
                widened = True
        if b[t0] < 0:
            b[t0], b[t1] = 0.0, b[t1] - b[t0]
        (grown if widened else kept).append(b)
    merged: list[dict] = []
    for b in sorted(grown, key=lambda b: (b["label"], b[t0])):
        while True:
            hit = next((m for m in merged if _same_smear_label(m, b) and m[t0] < b[t1] and b[t0] < m[t1]
                        and m[f0] < b[f1] and b[f0] < m[f1]), None)
            if hit is None:
                merged.append(b)
                break
            merged.remove(hit)
            label = b["label"] if b["label"] != UNKNOWN_LABEL else hit["label"]
            b = {**hit, **b, t0: min(hit[t0], b[t0]), t1: max(hit[t1], b[t1]),
                 f0: min(hit[f0], b[f0]), f1: max(hit[f1], b[f1]), "label": label}
            if "score" in hit or "score" in b:  # found boxes (evaluate.at_resolution): the best score
                b["score"] = max(float(hit.get("score", 0.0)), float(b.get("score", 0.0)))
    return kept + merged


def _same_smear_label(a: dict, b: dict) -> bool:
    """Widened boxes that overlap are one smear when their labels are the same; found boxes
    (they have a score) also when one is "signal", which names no class and so agrees with any,
    as NMS Merge has it (labels_agree): two models' boxes of a pulse below the grid, one named
    and one not, were scored as a hit and a false alarm (docs/training.md, session 40)."""
    if "score" in a or "score" in b:
        return labels_agree(a["label"], b["label"])
    return a["label"] == b["label"]


def resolution(params: SpectrogramParams, sample_rate: float) -> tuple[float, float]:
    """(samples, Hz): the smallest box ``resolvable_boxes`` lets through at these settings,
    MIN_BOX_PIXELS rows (one FFT window at hop fft_size/2) by MIN_BOX_PIXELS columns."""
    return MIN_BOX_PIXELS * params.hop, MIN_BOX_PIXELS * sample_rate / params.width


def pixel_boxes(boxes: list[dict], params: SpectrogramParams, row_start: int, valid_rows: int,
                sample_rate: float, center_freq: float) -> list[dict]:
    """Physical boxes -> clipped pixel boxes of one tile (slivers dropped)."""
    out = []
    for b in boxes:
        y0 = float(params.sample_to_row(b["s0"])) - row_start
        y1 = float(params.sample_to_row(b["s1"])) - row_start
        x0 = float(params.offset_hz_to_column(b["f0"] - center_freq, sample_rate))
        x1 = float(params.offset_hz_to_column(b["f1"] - center_freq, sample_rate))
        y0, y1 = max(y0, 0.0), min(y1, float(valid_rows))
        x0, x1 = max(x0, 0.0), min(x1, float(params.width))
        if y1 - y0 < MIN_BOX_PIXELS - 1e-6 or x1 - x0 < MIN_BOX_PIXELS - 1e-6:
            continue
        out.append({"label": b["label"], "x_min": round(x0, 3), "y_min": round(y0, 3),
                    "x_max": round(x1, 3), "y_max": round(y1, 3)})
    return out


def recording_tiles(rec: SigMFRecording, opt: PrepareOptions, engine: SpectrogramEngine):
    """Yields (tile, row_start, valid_rows) exactly as the Detector assembles them."""
    p = opt.params
    stream = StreamingSpectrogram(p, engine)
    tiles = TileAssembler(opt.tile_height, p.width, opt.overlap)
    for pos, x in rec.chunks(opt.chunk_samples):
        if not np.all(np.isfinite(x.view(np.float32))):
            bad = int(np.flatnonzero(~np.isfinite(x))[0])
            raise RecordingError(f"{rec.meta_path}: sample {pos + bad} is NaN or infinite")
        for tile, row_start in tiles.push(stream.push(x)):
            yield tile, row_start, opt.tile_height
    last = tiles.flush()
    if last is not None:
        yield last


def prepare_recording(path: Path, opt: PrepareOptions, engine: SpectrogramEngine, tiles_dir: Path
                      ) -> tuple[list[dict], list[str]]:
    """One recording's tiles written as PNGs into ``tiles_dir`` -> (their entries, what
    was skipped and why). A recording that cannot be read is skipped whole, saying so."""
    try:
        rec = SigMFRecording.open(path)
        boxes, ann_skips = labelled_boxes(rec)
        if opt.labels is not None:
            boxes = [b for b in boxes if b["label"] in opt.labels]
        boxes = resolvable_boxes(boxes, *resolution(opt.params, rec.sample_rate))
        skipped = [f"{path.name}: {s}" for s in ann_skips]
        if not boxes:
            what = f"no annotation labelled {'/'.join(opt.labels)}" if opt.labels is not None else \
                "no labelled annotations"
            return [], skipped + [f"{path.name}: {what} (recording skipped)"]
        stem = path.name.removesuffix(".sigmf-meta").removesuffix(".sigmf")
        new = []
        for i, (tile, row_start, valid) in enumerate(recording_tiles(rec, opt, engine)):
            first_sample = max(0, int(opt.params.row_to_sample(row_start)))
            cap = rec.capture_at(first_sample)
            bb = pixel_boxes(boxes, opt.params, row_start, valid, rec.sample_rate, cap.frequency)
            name = f"{stem}_{i:04d}"
            write_tile_png(tiles_dir / f"{name}.png", tile)
            new.append({"image": f"{name}.png", "width": opt.params.width, "height": opt.tile_height,
                        "bboxes": bb,
                        "source": {"recording": str(path), "tile": i, "row_start": int(row_start),
                                   "rows": int(valid), "sample_rate": rec.sample_rate,
                                   "center_freq": cap.frequency}})
        return new, skipped
    except RecordingError as e:  # corrupt/truncated/NaN: skip the whole recording, say so
        return [], [f"{path.name}: unreadable ({e}) (recording skipped)"]


_worker = {}


def _worker_start(opt: PrepareOptions, tiles_dir: str) -> None:
    # one FFT thread per process: the processes are the parallelism
    _worker.update(opt=opt, tiles_dir=Path(tiles_dir), engine=SpectrogramEngine(opt.params, threads=1))


def _worker_recording(path: Path):
    return prepare_recording(path, _worker["opt"], _worker["engine"], _worker["tiles_dir"])


def _recordings_in_order(recs: list[Path], opt: PrepareOptions, tiles_dir: Path, jobs: int):
    """Yields prepare_recording's result for each recording, in order; ``jobs`` > 1
    spreads the recordings over that many processes."""
    if jobs <= 1 or len(recs) < 2:
        engine = SpectrogramEngine(opt.params)
        try:
            for path in recs:
                yield prepare_recording(path, opt, engine, tiles_dir)
        finally:
            engine.close()
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool
    # spawn, not fork: the parent may hold PyTorch's or FFTW's threads
    pool = ProcessPoolExecutor(min(jobs, len(recs)), mp_context=multiprocessing.get_context("spawn"),
                               initializer=_worker_start, initargs=(opt, str(tiles_dir)))
    try:
        yield from pool.map(_worker_recording, recs)
    except BrokenProcessPool:
        raise DataError(f"a prepare process ended abruptly (out of memory? --jobs {jobs} reads {jobs} recordings "
                        "at once; try a smaller --jobs)") from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def prepare(data_dir, out_dir, opt: PrepareOptions, progress: bool = True, jobs: int = 1) -> dict:
    """Writes OUT/tiles/*.png|json, OUT/coco.json and OUT/dataset.json; returns the summary.
    ``jobs`` processes (0: one per core) read the recordings; the output is the same
    whatever their number.

    Writes into OUT.partial and renames it at the end, so OUT is complete or absent.
    """
    out_dir = Path(out_dir)
    recs = find_recordings(data_dir)
    jobs = (os.cpu_count() or 1) if jobs == 0 else jobs
    if jobs < 0:
        raise DataError(f"--jobs {jobs}: give a number of processes, or 0 for one per core")
    if opt.labels is not None:
        check_labels(recs, opt.labels, data_dir)
    work = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    (work / "tiles").mkdir(parents=True)
    entries, skipped, labels = [], [], set()
    n_boxes = 0
    results = _recordings_in_order(recs, opt, work / "tiles", jobs)
    try:
        for new, skips in progress_bar(results, desc="prepare", unit="rec", total=len(recs), enable=progress):
            skipped += skips
            for e in new:
                atomic_write_json(work / "tiles" / e["image"].replace(".png", ".json"), e)
                labels.update(b["label"] for b in e["bboxes"])
                n_boxes += len(e["bboxes"])
            entries += new
        if not entries:
            raise DataError(f"--data {data_dir}: no recording gave labelled tiles; skipped: "
                            + "; ".join(skipped[:5]) + (" ..." if len(skipped) > 5 else ""))
        if not labels:
            raise DataError(f"--data {data_dir}: every labelled box was smaller than {MIN_BOX_PIXELS} pixels "
                            f"after tiling; nothing to learn")
        labels = sorted(labels)
        atomic_write_json(work / "coco.json", to_coco(entries, labels))
        summary = {"schema": DATASET_SCHEMA, "labels": labels, "label_filter": None if opt.labels is None else list(opt.labels),
                   "spectrogram": opt.params.to_dict(),
                   "tile_height": opt.tile_height, "overlap": opt.overlap, "tiles": len(entries),
                   "tiles_with_boxes": sum(1 for e in entries if e["bboxes"]), "boxes": n_boxes,
                   "recordings": len({e["source"]["recording"] for e in entries}), "skipped": skipped,
                   "images": [e["image"] for e in entries]}
        atomic_write_json(work / "dataset.json", summary)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        work.rename(out_dir)
    except BaseException:
        results.close()  # the worker processes stop writing before their folder goes
        shutil.rmtree(work, ignore_errors=True)
        raise
    for s in skipped:
        print(f"prepare: skipped {s}")
    return summary


def to_coco(entries: list[dict], labels: list[str]) -> dict:
    cat = {lab: i + 1 for i, lab in enumerate(labels)}
    images, anns = [], []
    for img_id, e in enumerate(entries, start=1):
        images.append({"id": img_id, "file_name": e["image"], "width": e["width"], "height": e["height"]})
        for b in e["bboxes"]:
            w, h = b["x_max"] - b["x_min"], b["y_max"] - b["y_min"]
            anns.append({"id": len(anns) + 1, "image_id": img_id, "category_id": cat[b["label"]],
                         "bbox": [b["x_min"], b["y_min"], w, h], "area": w * h, "iscrowd": 0})
    return {"images": images, "annotations": anns,
            "categories": [{"id": i, "name": lab} for lab, i in cat.items()]}


def load_dataset(tiles_dir) -> dict:
    """dataset.json of a prepared folder, checked."""
    d = Path(tiles_dir)
    path = d / "dataset.json"
    if not path.is_file():
        raise DataError(f"{d}: no dataset.json (run `rfdetect-train prepare` first)")
    try:
        ds = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None
    if ds.get("schema") != DATASET_SCHEMA:
        raise DataError(f"{path}: schema must be {DATASET_SCHEMA!r}")
    ds["root"] = str(d)
    ds["params"] = SpectrogramParams.from_dict(ds["spectrogram"])
    return ds


def load_entry(ds: dict, image: str) -> dict:
    path = Path(ds["root"]) / "tiles" / image.replace(".png", ".json")
    try:
        e = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: bbox JSON unreadable ({err})") from None
    for b in e.get("bboxes", []):
        if not all(isinstance(b.get(k), (int, float)) and math.isfinite(b[k])
                   for k in ("x_min", "y_min", "x_max", "y_max")):
            raise DataError(f"{path}: a box has missing or non-numeric coordinates: {b}")
    return e
