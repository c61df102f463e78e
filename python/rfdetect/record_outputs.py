"""Where records go: ZeroMQ PUB, SigMF annotations, JSONL. Plain Python, no GNU Radio."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from .records import STATS_SCHEMA, to_annotation, to_json, topic
from .sigmf_io import SigMFRecording, atomic_write_json, new_meta, sort_annotations

ANNOTATED_EVENTS = ("detection", "new", "update")
_LATENCY_TILES = 2000


class RecordPublisher:
    """Publishes records as two-frame ZeroMQ messages ``[topic, json]``.

    Uses an XPUB socket with ZMQ_XPUB_NODROP, so a send that would exceed a
    subscriber's high-water mark fails at once (never blocks) and is counted in
    ``dropped`` instead of vanishing silently as on a plain PUB socket.
    """

    def __init__(self, address: str = "tcp://127.0.0.1:5555", hwm: int = 10000, bind: bool = True):
        import zmq
        self._zmq = zmq
        self.ctx = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.XPUB)
        self.sock.setsockopt(zmq.SNDHWM, int(hwm))
        self.sock.setsockopt(zmq.XPUB_NODROP, 1)
        self.sock.setsockopt(zmq.LINGER, 0)
        try:
            (self.sock.bind if bind else self.sock.connect)(address)
        except zmq.ZMQError as e:
            self.sock.close()
            raise ValueError(f"cannot {'bind' if bind else 'connect'} ZeroMQ socket to {address!r}: {e}") from None
        self.address = self.sock.getsockopt_string(zmq.LAST_ENDPOINT) if bind else address
        self.sent = 0
        self.dropped = 0
        self.subscriptions = 0
        # end-to-end latency: tile index -> when its last row entered the Detector, and
        # when its last detection left here (time.monotonic, one process)
        self._entered: dict = {}
        self._left: dict = {}

    def _drain_subscriptions(self):
        zmq = self._zmq
        while True:
            try:
                msg = self.sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if msg[:1] == b"\x01":
                self.subscriptions += 1
            elif msg[:1] == b"\x00":
                self.subscriptions = max(0, self.subscriptions - 1)

    def wait_for_subscriber(self, timeout_s: float) -> bool:
        """Block until at least one subscriber has joined (or ``timeout_s`` passes).
        For file playback: ZeroMQ drops what is published before a subscriber's
        connection is complete."""
        deadline = time.monotonic() + timeout_s
        while self.subscriptions == 0:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self.sock.poll(int(min(left, 0.1) * 1000)):
                self._drain_subscriptions()
        return True

    def send(self, topic_name: str, payload: str) -> bool:
        zmq = self._zmq
        self._drain_subscriptions()
        try:
            self.sock.send_multipart([topic_name.encode(), payload.encode()], flags=zmq.NOBLOCK)
            self.sent += 1
            return True
        except zmq.Again:
            self.dropped += 1
            return False

    def note_tile(self, tile: dict) -> None:
        """Remember when a tile entered the Detector (its ``entered_s``)."""
        if "entered_s" in tile and "index" in tile:
            self._entered[tile["index"]] = tile["entered_s"]
            for d in (self._entered, self._left):
                while len(d) > _LATENCY_TILES:
                    d.pop(next(iter(d)))

    def publish(self, records: Iterable[dict]) -> None:
        for r in records:
            if self.send(topic(r), to_json(r)) and r.get("tile") in self._entered:
                self._left[r["tile"]] = time.monotonic()

    def latency(self) -> dict:
        """Per tile with detections: from its last row entering the Detector to its last
        detection leaving this publisher (ms)."""
        lat = [(left - self._entered[i]) * 1e3 for i, left in self._left.items() if i in self._entered]
        if not lat:
            return {"tiles": 0}
        return {"tiles": len(lat), "p50": round(float(np.percentile(lat, 50)), 3),
                "p99": round(float(np.percentile(lat, 99)), 3), "max": round(max(lat), 3)}

    def publish_stats(self, stats: dict) -> None:
        stats = dict(stats, publisher={"sent": self.sent, "dropped": self.dropped,
                                       "latency_ms": self.latency()})
        self.send("stats", json.dumps(stats, sort_keys=True))

    def close(self, linger_ms: int = 1000):
        # linger, so that the last records of a stream still reach connected
        # subscribers; bounded, so a stuck subscriber cannot hold up shutdown
        self.sock.close(linger=linger_ms)


class AnnotationWriter:
    """Collects detection records and writes them as a SigMF recording's annotations.

    The output is ``out_base.sigmf-meta`` (written atomically: a reader sees the
    previous complete file or the new one) plus ``out_base.sigmf-data``: a hard link
    to the source recording's data when possible, a copy otherwise. Without a source
    recording (live SDR) a metadata-only file is written (core:metadata_only).
    """

    def __init__(self, out_base, source: Optional[str] = None, sample_rate: float = 0.0,
                 center_freq: float = 0.0):
        self.out_base = Path(str(out_base).removesuffix(".sigmf-meta"))
        self.meta_path = Path(str(self.out_base) + ".sigmf-meta")
        self.data_path = Path(str(self.out_base) + ".sigmf-data")
        if not self.out_base.parent.is_dir():
            raise ValueError(f"SigMF output folder does not exist: {self.out_base.parent}")
        self.source = SigMFRecording.open(source) if source else None
        if self.source is not None:
            self.meta = json.loads(json.dumps(self.source.meta))  # deep copy
            self.meta.setdefault("annotations", [])
        else:
            self.meta = new_meta(sample_rate or 1.0, "cf32_le", center_freq)
            self.meta["global"]["core:metadata_only"] = True
        # keep annotations that were in the source (ground truth), add ours
        self._base_annotations = list(self.meta.get("annotations") or [])
        self.annotations: list[dict] = []
        self.dirty = False
        self._data_ready = False

    def add(self, records: Iterable[dict]) -> int:
        n = 0
        for r in records:
            if r.get("event", "detection") in ANNOTATED_EVENTS:
                self.annotations.append(to_annotation(r))
                n += 1
        self.dirty = self.dirty or n > 0
        return n

    def _ensure_data(self):
        if self._data_ready or self.source is None:
            return
        src = Path(self.source.data_path)
        if self.source.data_offset or src.suffix == ".sigmf":
            raise ValueError("annotating a .sigmf archive: give an output outside the archive "
                             "(the data is extracted next to it)")
        if self.data_path.exists() and os.path.samefile(src, self.data_path):
            self._data_ready = True
            return
        fd, tmp = tempfile.mkstemp(prefix="." + self.data_path.name + ".", dir=self.data_path.parent)
        os.close(fd)
        os.unlink(tmp)
        try:
            try:
                os.link(src, tmp)
            except OSError:
                shutil.copyfile(src, tmp)
            os.replace(tmp, self.data_path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        self._data_ready = True

    def flush(self) -> None:
        self._ensure_data()
        meta = dict(self.meta)
        meta["annotations"] = sort_annotations(self._base_annotations + self.annotations)
        atomic_write_json(self.meta_path, meta)
        self.dirty = False


class JsonlWriter:
    """Appends records as JSON lines to ``path.partial``; ``commit()`` renames it to
    ``path``, ``abort()`` removes it, so ``path`` is only ever a complete run."""

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise ValueError(f"output folder does not exist: {self.path.parent}")
        self.partial = Path(str(self.path) + ".partial")
        self._f = open(self.partial, "w", encoding="utf-8")
        self.count = 0

    def add(self, records: Iterable[dict]) -> None:
        for r in records:
            self._f.write(to_json(r) + "\n")
            self.count += 1
        self._f.flush()

    def commit(self) -> None:
        if self._f is None:
            return
        self._f.close()
        self._f = None
        os.replace(self.partial, self.path)

    def abort(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
        if self.partial.exists():
            self.partial.unlink()


def is_stats(obj: dict) -> bool:
    return isinstance(obj, dict) and obj.get("schema") == STATS_SCHEMA

