"""Persistent track IDs for detections, across tiles.

Gating (all must hold for a detection to continue a track):

* same label (when ``class_aware``), where ``signal`` (a detection whose class was
  uncertain) matches any label, as in NMS Merge: a signal named in one tile and unsure in
  the next keeps one track, which takes the first name it is given;
* time: the detection starts no later than ``max_gap_s`` after the track's last
  detection ended (overlapping pieces always qualify);
* frequency: the detection continues the track's last detection
  (:func:`rfdetect.formats.records.continuation`): their [f_low, f_high] ranges have an IoU
  >= ``freq_iou_gate``, or, for a signal that sweeps (a chirp) and was cut by a tile
  edge, they share the band swept in the time the two pieces share. A chirp's pieces
  from consecutive tiles cover different bands, so IoU alone would split it into one
  track per tile or two.

Among the tracks that pass, the one with the best continuation score wins (an IoU
match over a sweep match). Events:
``new`` (first detection of a track), ``update`` (each further detection) and
``end`` (once no detection can arrive within ``max_gap_s`` of the track's end, or at
the end of the stream; the end record spans the whole track). Track IDs increase
from 1 and are never reused.
"""
from __future__ import annotations

from ..formats.records import SCHEMA, continuation, utc_source
from ..inference.postprocess import DEFAULT_UNKNOWN_LABEL as UNKNOWN_LABEL
from .nms_merge import labels_agree


class _Track:
    __slots__ = ("id", "label", "t_start", "t_stop", "f_low", "f_high", "last", "score", "model",
                 "models", "n", "sample_start", "sample_end", "utc_start", "utc_stop", "utc_sources")

    def __init__(self, tid, r):
        self.id = tid
        self.label = r["label"]
        self.t_start, self.t_stop = r["t_start"], r["t_stop"]
        self.f_low, self.f_high = r["f_low"], r["f_high"]
        self.last = r  # the track's last detection: the next one must continue it
        self.score = r["score"]
        self.model = r["model"]
        self.models = set(r.get("models") or [r["model"]])
        self.n = 1
        self.sample_start = r["sample_start"]
        self.sample_end = r["sample_start"] + r["sample_count"]
        self.utc_start, self.utc_stop = r.get("utc_start"), r.get("utc_stop")
        self.utc_sources = [r.get("utc_source")] * 2  # of utc_start, of utc_stop

    def add(self, r):
        if r["t_start"] < self.t_start:
            self.t_start, self.utc_start, self.utc_sources[0] = r["t_start"], r.get("utc_start"), r.get("utc_source")
        if r["t_stop"] >= self.t_stop:
            self.t_stop, self.utc_stop, self.utc_sources[1] = r["t_stop"], r.get("utc_stop"), r.get("utc_source")
        self.f_low, self.f_high = min(self.f_low, r["f_low"]), max(self.f_high, r["f_high"])
        if self.label == UNKNOWN_LABEL:
            self.label = r["label"]
        self.last = r
        self.score = max(self.score, r["score"])
        self.models |= set(r.get("models") or [r["model"]])
        self.n += 1
        self.sample_start = min(self.sample_start, r["sample_start"])
        self.sample_end = max(self.sample_end, r["sample_start"] + r["sample_count"])

    def end_record(self) -> dict:
        return {"schema": SCHEMA, "event": "end", "track_id": self.id, "label": self.label,
                "t_start": self.t_start, "t_stop": self.t_stop, "f_low": self.f_low, "f_high": self.f_high,
                "score": self.score, "model": self.model, "models": sorted(self.models),
                "sample_start": self.sample_start, "sample_count": self.sample_end - self.sample_start,
                "utc_start": self.utc_start, "utc_stop": self.utc_stop,
                "utc_source": utc_source(*self.utc_sources), "n_detections": self.n}


class TrackAssigner:
    def __init__(self, freq_iou_gate: float = 0.5, max_gap_s: float = 0.02, class_aware: bool = True):
        if not 0.0 < freq_iou_gate <= 1.0:
            raise ValueError(f"freq_iou_gate={freq_iou_gate} must be in (0, 1]")
        if max_gap_s < 0:
            raise ValueError(f"max_gap_s={max_gap_s} must be >= 0")
        self.freq_iou_gate = float(freq_iou_gate)
        self.max_gap_s = float(max_gap_s)
        self.class_aware = bool(class_aware)
        self._next_id = 1
        self.active: dict[int, _Track] = {}
        self.tracks_started = 0
        self.tracks_ended = 0

    def _best_track(self, r):
        best, best_score = None, 0.0
        for tr in self.active.values():
            if self.class_aware and not labels_agree(tr.label, r["label"]):
                continue
            if r["t_start"] - tr.t_stop > self.max_gap_s:
                continue
            score = continuation(tr.last, r, self.freq_iou_gate)
            if score > best_score:
                best, best_score = tr, score
        return best

    def assign(self, records: list[dict]) -> list[dict]:
        events = []
        for r in sorted(records, key=lambda r: r["t_start"]):
            tr = self._best_track(r)
            if tr is None:
                tr = _Track(self._next_id, r)
                self._next_id += 1
                self.active[tr.id] = tr
                self.tracks_started += 1
                ev = "new"
            else:
                tr.add(r)
                ev = "update"
            events.append(dict(r, event=ev, track_id=tr.id))
        return events

    def expire(self, horizon_s: float) -> list[dict]:
        """End tracks that no detection starting at or after ``horizon_s`` can extend."""
        done = [tr for tr in self.active.values() if tr.t_stop + self.max_gap_s < horizon_s]
        return self._end(done)

    def end_all(self) -> list[dict]:
        return self._end(list(self.active.values()))

    def _end(self, tracks) -> list[dict]:
        out = []
        for tr in sorted(tracks, key=lambda t: t.id):
            del self.active[tr.id]
            self.tracks_ended += 1
            out.append(tr.end_record())
        return out

    def push(self, tile: dict, records: list[dict]) -> list[dict]:
        """Merged records of one tile in; new/update/end events out.

        Records emitted after this tile start no earlier than this tile does (NMS
        Merge holds a record for at most one tile, or, with ``long_signals`` whole, a
        signal longer than a tile until it ends: that one comes whole, with no
        earlier piece to continue; a record it holds longer, waiting for another
        input or for a held record that may grow into its duplicate, moves the
        forwarded tile's start back to its own), so tracks that ended ``max_gap_s``
        before it are over."""
        events = self.assign(records)
        if tile.get("final"):
            events += self.end_all()
        else:
            events += self.expire(tile.get("t_start", float("-inf")))
        return events
