"""Where records go: ZeroMQ PUB, SigMF annotations, JSONL. Plain Python, no GNU Radio."""
from __future__ import annotations

import heapq
import itertools
import json
import os
import shutil
import stat
import tempfile
import time
from pathlib import Path
from typing import Iterable, Iterator, Optional

import numpy as np

from .records import STATS_SCHEMA, to_annotation, to_json, topic
from .sigmf_io import SigMFRecording, annotation_key, atomic_write_meta_stream, new_meta

ANNOTATED_EVENTS = ("detection", "new", "update")
_LATENCY_TILES = 2000


class RecordPublisher:
    """Publishes records as two-frame ZeroMQ messages ``[topic, json]``.

    PUB semantics, one queue per subscriber: each subscriber has its own high-water
    mark (``hwm`` messages); a subscriber that falls that far behind loses the messages
    that do not fit in *its* queue, and only it: the others, and the flowgraph, go on
    (sends never block). The socket is an XPUB without ZMQ_XPUB_NODROP only so that
    subscriptions can be seen (``wait_for_subscriber``): with NODROP one full queue
    made every send fail, for every subscriber (issue 13, item 4).

    ZeroMQ does not tell a publisher which subscriber dropped what, so losses are
    counted where they can be seen, by the subscriber: every message carries
    ``zmq_seq``, its number on its topic (0, 1, 2, ... per topic, from this
    publisher's start), and the ``stats`` messages carry ``publisher.sent_by_topic``.
    :class:`SequenceCheck` turns those into a subscriber's loss count.
    ``dropped`` counts only what ZeroMQ refused outright (for every subscriber at once).
    """

    def __init__(self, address: str = "tcp://127.0.0.1:5555", hwm: int = 10000, bind: bool = True):
        import zmq
        self._zmq = zmq
        self.ctx = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.XPUB)
        self.sock.setsockopt(zmq.SNDHWM, int(hwm))
        # every (un)subscription is passed up, not only a topic's first and last, so
        # that ``subscriptions`` counts each subscriber's (libzmq < 4.3 has no
        # VERBOSER: subscriptions then still counted, leaving ones not)
        try:
            self.sock.setsockopt(zmq.XPUB_VERBOSER, 1)
        except (zmq.ZMQError, AttributeError):
            self.sock.setsockopt(zmq.XPUB_VERBOSE, 1)
        self.sock.setsockopt(zmq.LINGER, 0)
        try:
            (self.sock.bind if bind else self.sock.connect)(address)
        except zmq.ZMQError as e:
            self.sock.close()
            raise ValueError(f"cannot {'bind' if bind else 'connect'} ZeroMQ socket to {address!r}: {e}") from None
        self.address = self.sock.getsockopt_string(zmq.LAST_ENDPOINT) if bind else address
        self.sent = 0
        self.dropped = 0
        self.sent_by_topic: dict[str, int] = {}  # also the next zmq_seq of each topic
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

    def wait_for_subscriber(self, timeout_s: float, count: int = 1) -> bool:
        """Block until ``count`` subscriptions have been made (or ``timeout_s`` passes).
        For file playback: ZeroMQ drops what is published before a subscriber's
        connection is complete."""
        deadline = time.monotonic() + timeout_s
        while self.subscriptions < count:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self.sock.poll(int(min(left, 0.1) * 1000)):
                self._drain_subscriptions()
        return True

    def send(self, topic_name: str, obj: dict) -> bool:
        """Publish ``obj`` (with its ``zmq_seq``) on ``topic_name``; never blocks."""
        zmq = self._zmq
        self._drain_subscriptions()
        seq = self.sent_by_topic.get(topic_name, 0)
        payload = to_json(dict(obj, zmq_seq=seq))
        try:
            self.sock.send_multipart([topic_name.encode(), payload.encode()], flags=zmq.NOBLOCK)
        except zmq.Again:
            # not expected without XPUB_NODROP; counted, and the number not used
            # (no gap), since no subscriber got it
            self.dropped += 1
            return False
        self.sent_by_topic[topic_name] = seq + 1
        self.sent += 1
        return True

    def note_tile(self, tile: dict) -> None:
        """Remember when a tile entered the Detector (its ``entered_s``)."""
        if "entered_s" in tile and "index" in tile:
            self._entered[tile["index"]] = tile["entered_s"]
            for d in (self._entered, self._left):
                while len(d) > _LATENCY_TILES:
                    d.pop(next(iter(d)))

    def publish(self, records: Iterable[dict]) -> None:
        for r in records:
            if self.send(topic(r), r) and r.get("tile") in self._entered:
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
        # sent_by_topic counts this stats message too, so that a subscriber can
        # tell records lost after the last one it received (no later gap shows them)
        by_topic = dict(self.sent_by_topic)
        by_topic["stats"] = by_topic.get("stats", 0) + 1
        stats = dict(stats, publisher={"sent": self.sent, "dropped": self.dropped, "sent_by_topic": by_topic,
                                       "subscriptions": self.subscriptions, "latency_ms": self.latency()})
        self.send("stats", stats)

    def close(self, linger_ms: int = 1000):
        # linger, so that the last records of a stream still reach connected
        # subscribers; bounded, so a stuck subscriber cannot hold up shutdown
        self.sock.close(linger=linger_ms)


JOURNAL_SUFFIX = ".sigmf-meta.journal"
JOURNAL_FORMAT = "rfdetect.annotation-journal/1"
_SORT_CHUNK = 50000  # annotations sorted in memory at a time when finalising (~50 MB)


class SequenceCheck:
    """A subscriber's own count of the messages it lost, from ``zmq_seq`` (see
    :class:`RecordPublisher`): feed it every message received, in order.

    ``lost`` counts messages missing between ones received on a topic and, when the
    subscriber also takes the ``stats`` topic, those missing after the last one received
    (a ``stats`` message's ``publisher.sent_by_topic`` says how many were sent before
    it, and one queue per subscriber keeps its messages in order). Messages published
    before the subscriber's first one on a topic are not counted (it had not joined).
    A ``zmq_seq`` going back means the publisher restarted: counted in ``restarts``.
    """

    def __init__(self):
        self.next: dict[str, int] = {}
        self.received = 0
        self.lost = 0
        self.restarts = 0

    def feed(self, topic_name: str, obj: dict) -> int:
        """-> messages found lost with this one."""
        seq = obj.get("zmq_seq")
        if not isinstance(seq, int):
            raise ValueError(f"message on {topic_name!r} has no zmq_seq: not from an rfdetect ZMQ PUB Sink")
        self.received += 1
        expect = self.next.get(topic_name)
        if expect is not None and seq < expect:
            self.restarts += 1
        gap = seq - expect if expect is not None and seq > expect else 0
        self.next[topic_name] = seq + 1
        sent = (obj.get("publisher") or {}).get("sent_by_topic") if topic_name == "stats" else None
        for t, n in (sent.items() if isinstance(sent, dict) else ()):
            if t in self.next and isinstance(n, int) and n > self.next[t]:
                gap += n - self.next[t]
                self.next[t] = n
        self.lost += gap
        return gap


class AnnotationWriter:
    """Writes detection records as a SigMF recording's annotations, in bounded memory.

    While running, each annotation is appended as one JSON line to the journal
    ``out_base.sigmf-meta.journal`` (its first line holds the recording's global and
    captures, so the journal alone is enough to rebuild the metadata); nothing is kept
    in memory. ``finalise()`` (at the end of the stream or when the flowgraph stops)
    sorts the journal in chunks of ``sort_chunk`` annotations and merges them into
    ``out_base.sigmf-meta``, written atomically, then removes the journal.

    ``out_base.sigmf-data`` is a hard link to the source recording's data when
    possible, a copy otherwise. Without a source recording (live SDR) a metadata-only
    file is written (core:metadata_only).

    After a crash the journal stays: a ``.sigmf-meta`` is rebuilt from it by
    :func:`recover_journal` (``rfdetect recover``),
    and a writer started on the same ``out_base`` first recovers it aside as
    ``out_base.recovered-<time>.sigmf-meta`` (the same run restarted after a power cut
    must not lose the earlier run's annotations, nor refuse to start).
    """

    def __init__(self, out_base, source: Optional[str] = None, sample_rate: float = 0.0,
                 center_freq: float = 0.0, sync_interval_s: float = 5.0, sort_chunk: int = _SORT_CHUNK):
        self.out_base = Path(str(out_base).removesuffix(".sigmf-meta"))
        self.meta_path = Path(str(self.out_base) + ".sigmf-meta")
        self.data_path = Path(str(self.out_base) + ".sigmf-data")
        self.journal_path = Path(str(self.out_base) + JOURNAL_SUFFIX)
        if not self.out_base.parent.is_dir():
            raise ValueError(f"SigMF output folder does not exist: {self.out_base.parent}")
        self.source = SigMFRecording.open(source) if source else None
        if self.source is not None:
            meta = json.loads(json.dumps(self.source.meta))  # deep copy
            meta["annotations"] = list(meta.get("annotations") or [])  # ground truth, kept
        else:
            meta = new_meta(sample_rate or 1.0, "cf32_le", center_freq)
            meta["global"]["core:metadata_only"] = True
        self.recovered = None
        if self.journal_path.exists():
            aside = _aside_base(self.out_base, self.journal_path)
            try:
                self.recovered = recover_journal(self.journal_path, aside)
            except ValueError as e:
                # kept for a person to look at, and out of the way: a field box that
                # restarts must not be stopped by the journal of an earlier run
                damaged = Path(str(aside) + JOURNAL_SUFFIX + ".damaged")
                os.replace(self.journal_path, damaged)
                self.recovered = {"error": f"{e}; moved to {damaged}"}
        self.sync_interval_s = float(sync_interval_s)
        self.sort_chunk = int(sort_chunk)
        self.count = 0
        self._ensure_data()
        # the journal's header line, fsynced before any annotation follows it
        self._journal = open(self.journal_path, "wb", buffering=0)
        header = {"format": JOURNAL_FORMAT, "meta": meta,
                  "data": str(self.data_path) if self.source is not None else None}
        _append_whole_lines(self._journal, json.dumps(header) + "\n")
        self._sync()

    def add(self, records: Iterable[dict]) -> int:
        """Append the annotations of ``records`` to the journal (one write, flushed to
        the OS so a crash of this process loses nothing; fsynced every
        ``sync_interval_s``, which bounds what a power cut can lose)."""
        if self._journal is None:
            raise ValueError(f"{self.meta_path}: annotations added after the file was finalised")
        lines = [json.dumps(to_annotation(r), sort_keys=True) + "\n" for r in records
                 if r.get("event", "detection") in ANNOTATED_EVENTS]
        if lines:
            _append_whole_lines(self._journal, "".join(lines))
            self.count += len(lines)
            if time.monotonic() - self._synced >= self.sync_interval_s:
                self._sync()
        return len(lines)

    def _sync(self) -> None:
        os.fsync(self._journal.fileno())
        self._synced = time.monotonic()

    def flush(self) -> None:
        """Make everything added so far durable (journal fsynced)."""
        if self._journal is not None:
            self._sync()

    def finalise(self) -> None:
        """Write ``out_base.sigmf-meta`` from the journal (atomically) and remove the
        journal. Idempotent; later ``add`` calls are refused."""
        if self._journal is None:
            return
        self._sync()
        self._journal.close()
        self._journal = None
        recover_journal(self.journal_path, self.out_base, sort_chunk=self.sort_chunk)

    def _ensure_data(self):
        if self.source is None:
            return
        src = Path(self.source.data_path)
        if self.source.data_offset or src.suffix == ".sigmf":
            raise ValueError("annotating a .sigmf archive: give an output outside the archive "
                             "(the data is extracted next to it)")
        _link_or_copy(src, self.data_path)


def _append_whole_lines(f, text: str) -> None:
    """Append ``text`` (whole lines) to an unbuffered binary file, so it is in the OS
    at once (a reader or a crash of this process sees it); if the write fails part way
    (disk full), cut the file back to where it was, so no half line stays, and raise."""
    pos = f.tell()
    view = memoryview(text.encode("utf-8"))
    try:
        while view:
            view = view[f.write(view):]
    except OSError:
        try:
            f.truncate(pos)
            f.seek(pos)
        except OSError:
            pass
        raise


def _link_or_copy(src: Path, dst: Path) -> None:
    """``dst`` becomes ``src``'s data: a hard link when the file system allows, a copy
    otherwise; put in place by rename, so ``dst`` is never a partial copy."""
    if dst.exists() and os.path.samefile(src, dst):
        return
    fd, tmp = tempfile.mkstemp(prefix="." + dst.name + ".", dir=dst.parent)
    os.close(fd)
    os.unlink(tmp)
    try:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _aside_base(out_base: Path, journal: Path) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(journal.stat().st_mtime))
    base = Path(f"{out_base}.recovered-{stamp}")
    n = 1
    while Path(str(base) + ".sigmf-meta").exists():
        n += 1
        base = Path(f"{out_base}.recovered-{stamp}-{n}")
    return base


def read_journal(journal) -> tuple[dict, Iterator[dict], dict]:
    """-> (header, annotations in journal order, counts). A last line cut short by a
    crash (no newline, or not JSON) is skipped and counted in ``counts["torn"]``; a bad
    line anywhere else means the file is not a journal that this code wrote, an error."""
    journal = Path(journal)
    f = open(journal, encoding="utf-8")
    first = f.readline()
    try:
        header = json.loads(first)
        if header.get("format") != JOURNAL_FORMAT:
            raise ValueError
    except ValueError:
        f.close()
        raise ValueError(f"{journal}: not an rfdetect annotation journal (first line is not its header)") from None
    counts = {"annotations": 0, "torn": 0}

    def annotations():
        with f:
            lineno = 1
            while line := f.readline():
                lineno += 1
                try:
                    if not line.endswith("\n"):
                        raise ValueError("no newline")
                    a = json.loads(line)
                except ValueError:
                    if f.readline() == "":  # the last line: a write cut short by the crash
                        counts["torn"] += 1
                        return
                    raise ValueError(f"{journal}:{lineno}: damaged line in the middle of the journal") from None
                counts["annotations"] += 1
                yield a
    return header, annotations(), counts


def _sorted_bounded(items: Iterable[dict], chunk: int, tmp_dir: Path) -> Iterator[dict]:
    """``items`` in SigMF order with at most ``chunk`` of them in memory: sorted runs
    of ``chunk`` spill to anonymous temporary files (gone even after a crash), merged
    lazily."""
    runs, buf = [], []
    try:
        for a in items:
            buf.append(a)
            if len(buf) >= chunk:
                runs.append(_spill(sorted(buf, key=annotation_key), tmp_dir))
                buf = []
        buf.sort(key=annotation_key)
        if not runs:
            yield from buf
            return
        runs.append(_spill(buf, tmp_dir))
        buf = []
        yield from heapq.merge(*((json.loads(line) for line in r) for r in runs), key=annotation_key)
    finally:
        for r in runs:
            r.close()


def _spill(annotations: list, tmp_dir: Path):
    f = tempfile.TemporaryFile("w+", encoding="utf-8", dir=tmp_dir)
    for a in annotations:
        f.write(json.dumps(a) + "\n")
    f.seek(0)
    return f


def recover_journal(journal, out_base=None, sort_chunk: int = _SORT_CHUNK) -> dict:
    """Build ``out_base.sigmf-meta`` (default: the journal's own base) from an
    annotation journal, atomically, in bounded memory; link its data beside it when the
    journal's recording has data; then remove the journal.
    -> {"meta": path, "annotations": n, "torn": n}."""
    journal = Path(journal)
    if not str(journal).endswith(JOURNAL_SUFFIX):
        raise ValueError(f"{journal}: an annotation journal's name ends in {JOURNAL_SUFFIX}")
    out_base = Path(out_base) if out_base is not None else Path(str(journal)[: -len(JOURNAL_SUFFIX)])
    header, anns, counts = read_journal(journal)
    meta = header["meta"]
    meta_path = Path(str(out_base) + ".sigmf-meta")
    if header.get("data"):
        data = Path(header["data"])
        if not data.exists():
            anns.close()
            raise ValueError(f"{journal}: its recording's data {data} is gone; cannot rebuild a SigMF recording")
        _link_or_copy(data, Path(str(out_base) + ".sigmf-data"))
    merged = _sorted_bounded(itertools.chain(meta.get("annotations") or [], anns), sort_chunk, meta_path.parent)
    n = atomic_write_meta_stream(meta_path, meta, merged)
    journal.unlink()
    return {"meta": str(meta_path), "annotations": n, "torn": counts["torn"]}


class JsonlWriter:
    """Writes records as JSON lines straight to ``path`` as they come (a ``tail -f``
    sees each tile's records when the tile is done). Every write is whole lines, and a
    write that fails part way is cut back, so each line in the file is a complete
    record; ``commit()`` fsyncs and closes, ``abort()`` (a run that failed) removes the
    file. A path that is not a regular file (``/dev/null``, a FIFO, a terminal) is written
    to and closed, never fsynced (some kernels refuse fsync there: EINVAL) nor removed."""

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise ValueError(f"output folder does not exist: {self.path.parent}")
        self._f = open(self.path, "wb", buffering=0)
        self._regular = stat.S_ISREG(os.fstat(self._f.fileno()).st_mode)
        self.count = 0

    def add(self, records: Iterable[dict]) -> None:
        if self._f is None:
            raise ValueError(f"{self.path}: records added after the file was closed")
        lines = [to_json(r) + "\n" for r in records]
        if lines:
            _append_whole_lines(self._f, "".join(lines))
            self.count += len(lines)

    def commit(self) -> None:
        if self._f is None:
            return
        if self._regular:
            os.fsync(self._f.fileno())
        self._f.close()
        self._f = None

    def abort(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
        if self._regular and self.path.is_file():
            self.path.unlink()


def is_stats(obj: dict) -> bool:
    return isinstance(obj, dict) and obj.get("schema") == STATS_SCHEMA


