"""The live view's server-side ZeroMQ subscription to a running flowgraph (its ZMQ PUB Sink).

One SUB socket, all topics (docs/schema.md, "ZeroMQ"). Records and statistics go into
a bounded buffer numbered 1, 2, 3...; the page's event stream sends what is newer
than what it has seen. Per-model statistics come from the Detector's ``stats``
messages (latency, drops, backend); per-subscriber losses from ``zmq_seq`` gaps.
"""
from __future__ import annotations

import json
import threading
import time
from collections import deque
from typing import Optional

BUFFER = 5000  # records kept for a page that opens late


class LiveFeed:
    def __init__(self, address: Optional[str]):
        self.address = address
        self.items = deque(maxlen=BUFFER)  # (seq, topic, obj)
        self.seq = 0
        self.stats = None
        self.counts = {}  # topic -> messages received
        self.by_model = {}  # model -> detections received
        self.labels = {}
        self.lost = 0
        self.connected_at = None
        self.last_message_at = None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = None

    def start(self):
        if not self.address:
            return
        self._thread = threading.Thread(target=self._run, name="rfdetect-live", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0):
        self._stop.set()
        if self._thread:
            self._thread.join(timeout)

    def _run(self):
        import zmq
        from ...formats.record_outputs import SequenceCheck
        check = SequenceCheck()
        ctx = zmq.Context.instance()
        s = ctx.socket(zmq.SUB)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(self.address)
        s.setsockopt_string(zmq.SUBSCRIBE, "")
        self.connected_at = time.time()
        try:
            while not self._stop.is_set():
                if not s.poll(200):
                    continue
                try:
                    topic, payload = s.recv_multipart()
                    obj = json.loads(payload)
                except (ValueError, zmq.ZMQError):
                    continue  # a message that is not [topic, json]: skipped
                t = topic.decode(errors="replace")
                if "zmq_seq" in obj and check.feed(t, obj):
                    self.lost = check.lost
                self._add(t, obj)
        finally:
            s.close(linger=0)

    def _add(self, topic: str, obj: dict):
        with self._cond:
            self.seq += 1
            self.items.append((self.seq, topic, obj))
            self.counts[topic] = self.counts.get(topic, 0) + 1
            self.last_message_at = time.time()
            if topic == "stats":
                self.stats = obj
            else:
                m = obj.get("model", "?")
                self.by_model[m] = self.by_model.get(m, 0) + 1
                lab = obj.get("label", "?")
                self.labels[lab] = self.labels.get(lab, 0) + 1
            self._cond.notify_all()

    def since(self, seq: int, timeout: float) -> list:
        """Items newer than ``seq``, waiting at most ``timeout`` seconds for one."""
        with self._cond:
            if self.seq <= seq:
                self._cond.wait(timeout)
            return [(n, t, o) for n, t, o in self.items if n > seq]

    def summary(self) -> dict:
        with self._cond:
            return {"address": self.address, "subscribed": self._thread is not None, "seq": self.seq,
                    "counts": dict(self.counts), "by_model": dict(self.by_model), "labels": dict(self.labels),
                    "lost": self.lost, "stats": self.stats, "last_message_at": self.last_message_at}
