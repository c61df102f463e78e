"""Merging detections across models and across overlapping tiles.

Consecutive tiles share ``overlap`` rows, so a signal in the overlap is seen twice
and a signal crossing a tile edge is seen as two truncated pieces. For each tile the
merger takes the new records plus those it held back from the previous tile and:

1. **stitches** pieces cut by a tile edge (the Detector marks them ``tile_edge``):
   two records from different tiles whose time spans meet and where the later one
   continues the earlier (:func:`rfdetect.formats.records.continuation`: frequency IoU >=
   ``iou_threshold``, or, for a signal that sweeps such as a chirp, the band both
   saw in the rows their tiles share) become their union, best-matching pairs first;
2. **suppresses** duplicates greedily, complete records before ones cut by an edge,
   then by score: a record whose (time x frequency) IoU with a kept record is >=
   ``iou_threshold`` is dropped, and so is a record cut by a tile edge that lies
   mostly (>= ``containment``) inside a kept record from another tile -- the part
   of a long or slanted signal that a neighbouring tile saw whole (same label only
   when ``class_aware``);
3. emits records that end before the next tile starts (no later tile can see them
   again) and holds back the rest. A held record leaves once a later tile has covered
   its end, unless it is still going on (cut by the end of the newest tile, where the
   next tile may continue it) and ``long_signals`` is "whole": then it grows until the
   signal ends, so a signal longer than a tile leaves as one record. With "pieces" a
   record is not held past the next tile, so latency stays bounded and a long signal
   leaves as a series of pieces that the Track Assigner joins under one track ID.
   "auto" (the default) is "whole" for a Detector in file mode (its tiles say which)
   and "pieces" in real-time mode.

Several Detectors may feed one merger (models trained on different spectrograms, each with
its own STFT Tile and Detector; the tile messages say which Detector by ``stream``, and each
Detector announces itself before its first tile: ``add_input``; ``inputs``: how many to
expect at least). Their tiles differ in length and arrive interleaved, so "the
next tile" is the earliest next tile of any input: a record leaves once it ends before
every input's next tile starts, or once every input has sent, while it was held, a
tile that reaches its end; the merger's own run ends when every input's has.
"""
from __future__ import annotations

from ..formats.records import box_iou, continuation, utc_source
from ..inference.postprocess import DEFAULT_UNKNOWN_LABEL as UNKNOWN_LABEL


# how a signal longer than a tile leaves: whole (held until it ends) or in pieces (bounded
# latency); auto: whole when the Detector runs a file, in pieces in real time
LONG_SIGNALS = ("auto", "whole", "pieces")
# a record cut by a tile's end stops where that tile stops, both computed from one sample index
EDGE_TOLERANCE_S = 1e-9


def labels_agree(a: str, b: str) -> bool:
    """Two labels of one signal: equal, or one of them "signal" (a localised signal whose
    class is uncertain, or the energy detector's), which matches any label."""
    return a == b or UNKNOWN_LABEL in (a, b)


def _join(a: dict, b: dict) -> dict:
    first, last = (a, b) if a["t_start"] <= b["t_start"] else (b, a)
    out = dict(max(a, b, key=lambda r: r["score"]))
    out["t_start"], out["sample_start"] = first["t_start"], first["sample_start"]
    out["t_stop"] = max(a["t_stop"], b["t_stop"])
    end = max(a["sample_start"] + a["sample_count"], b["sample_start"] + b["sample_count"])
    out["sample_count"] = end - out["sample_start"]
    out["f_low"] = min(a["f_low"], b["f_low"])
    out["f_high"] = max(a["f_high"], b["f_high"])
    out["utc_start"] = first.get("utc_start")
    stop_src = a if a["t_stop"] >= b["t_stop"] else b
    out["utc_stop"] = stop_src.get("utc_stop")
    out["utc_source"] = utc_source(first.get("utc_source"), stop_src.get("utc_source"))
    edge = []
    if "start" in first.get("tile_edge", []):
        edge.append("start")
    if "stop" in stop_src.get("tile_edge", []):
        edge.append("stop")
    out["tile_edge"] = edge
    out["models"] = sorted(set(a.get("models", [a["model"]])) | set(b.get("models", [b["model"]])))
    out["_seen"] = a.get("_seen", set()) | b.get("_seen", set())
    return out


def _inside_fraction(r: dict, other: dict) -> float:
    """Fraction of ``r``'s (time x frequency) area inside ``other``."""
    dt = min(r["t_stop"], other["t_stop"]) - max(r["t_start"], other["t_start"])
    df = min(r["f_high"], other["f_high"]) - max(r["f_low"], other["f_low"])
    area = (r["t_stop"] - r["t_start"]) * (r["f_high"] - r["f_low"])
    return dt * df / area if dt > 0 and df > 0 and area > 0 else 0.0


class NmsMerger:
    def __init__(self, iou_threshold: float = 0.5, class_aware: bool = True, stitch: bool = True,
                 containment: float = 0.7, inputs: int = 1, long_signals: str = "auto"):
        if not 0.0 < iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold={iou_threshold} must be in (0, 1]")
        if int(inputs) != inputs or inputs < 1:
            raise ValueError(f"inputs={inputs} must be a whole number >= 1 (the Detectors that feed the merger)")
        self.iou_threshold = float(iou_threshold)
        self.class_aware = bool(class_aware)
        self.stitch = bool(stitch)
        self.containment = float(containment)
        self.inputs = int(inputs)
        if long_signals not in LONG_SIGNALS:
            raise ValueError(f"long_signals={long_signals!r} must be one of {', '.join(LONG_SIGNALS)}")
        self.long_signals = long_signals
        self._held: list[dict] = []
        # per input (the tile's "stream"): where its next tile starts, and its last tile's start and end
        self._next_start: dict = {}
        self._last_start: dict = {}
        self._last_stop: dict = {}
        self.records_in = 0
        self.records_out = 0
        self.suppressed = 0
        self.stitched = 0

    def _same_class(self, a, b) -> bool:
        # "signal" (a localised signal whose class is uncertain, or the energy detector's)
        # is the same signal as a named one where they overlap, not a second one
        return not self.class_aware or labels_agree(a["label"], b["label"])

    def _stitch_score(self, a, b) -> float:
        """> 0 when ``a`` and ``b`` are pieces of one signal cut by a tile edge."""
        if _tile_of(a) == _tile_of(b) or not self._same_class(a, b):
            return 0.0
        first, second = (a, b) if a["t_start"] <= b["t_start"] else (b, a)
        if "stop" not in first.get("tile_edge", []) and "start" not in second.get("tile_edge", []):
            return 0.0
        if second["t_start"] > first["t_stop"]:
            return 0.0
        return continuation(first, second, self.iou_threshold)

    def _duplicate(self, kept: dict, r: dict) -> bool:
        if box_iou(kept, r) >= self.iou_threshold:
            return True
        if r.get("tile_edge") and _tile_of(kept) != _tile_of(r):
            return _inside_fraction(r, kept) >= self.containment
        return False

    def merge(self, records: list[dict]) -> list[dict]:
        """Stitch then suppress; pure function of ``records``."""
        recs = [dict(r) for r in records]
        while self.stitch:
            # best pair first: a piece that could continue two others joins the one it
            # matches best (the same band over a sweep, then the larger overlap)
            pairs = [(self._stitch_score(recs[i], recs[j]), i, j)
                     for i in range(len(recs)) for j in range(i + 1, len(recs))]
            score, i, j = max(pairs, default=(0.0, 0, 0))
            if score <= 0:
                break
            recs[i] = _join(recs[i], recs[j])
            del recs[j]
            self.stitched += 1
        kept: list[dict] = []
        for r in sorted(recs, key=lambda r: (bool(r.get("tile_edge")), -r["score"])):
            dup = next((k for k in kept if self._same_class(k, r) and self._duplicate(k, r)), None)
            if dup is None:
                kept.append(r)
            else:
                self.suppressed += 1
                if dup["label"] == UNKNOWN_LABEL and r["label"] != UNKNOWN_LABEL:
                    dup["label"] = r["label"]  # the kept box takes the name a duplicate knew
                dup["models"] = sorted(set(dup.get("models", [dup["model"]])) | set(r.get("models", [r["model"]])))
        return kept

    def add_input(self, stream: str) -> None:
        """An input (a Detector's ``stream``) that will send tiles: nothing it could
        duplicate leaves before it has passed that time."""
        if stream not in self._next_start:
            self._next_start[stream] = float("-inf")
            self._last_start[stream] = float("-inf")
            self._last_stop[stream] = float("-inf")
            self.inputs = max(self.inputs, len(self._next_start))

    def _input_of(self, tile: dict):
        stream = tile.get("stream", "")
        # an input nobody announced (a merger used without hellos) counts from its first tile
        if stream not in self._next_start and len(self._next_start) == self.inputs:
            self.inputs += 1
        return stream

    @property
    def finished(self) -> bool:
        """Every input has sent its final tile."""
        return len(self._next_start) == self.inputs and all(h == float("inf") for h in self._next_start.values())

    def out_tile(self, tile: dict) -> dict:
        """The tile message to forward after :meth:`push` of ``tile``: with one input, ``tile``
        itself; with several, one that says what holds for all of them (time starts no
        earlier than the slowest input's last tile, and the run is final once every input's is)."""
        if self.inputs == 1:
            return tile
        out = dict(tile, t_start=min(self._last_start.values()), next_t_start=min(self._next_start.values()),
                   final=self.finished)
        if not out["final"]:
            out.pop("run", None)
        return out

    def push(self, tile: dict, records: list[dict]) -> list[dict]:
        """Records of one tile in, records that are final out (sorted by time)."""
        stream = self._input_of(tile)
        self.records_in += len(records)
        self._next_start[stream] = float("inf") if tile.get("final") else tile.get("next_t_start", float("inf"))
        self._last_start[stream] = tile.get("t_start", float("-inf"))
        reach = float("inf") if tile.get("final") else tile.get("t_stop", float("inf"))
        self._last_stop[stream] = reach
        whole = self.long_signals == "whole" or (self.long_signals == "auto" and tile.get("mode") == "file")
        newest_end = min(self._last_stop.values())
        for r in self._held:
            if reach >= r["t_stop"]:
                r["_seen"].add(stream)
        merged = self.merge(self._held + [dict(r, _seen=set(), _stream=stream) for r in records])
        everyone = len(self._next_start) == self.inputs
        horizon = min(self._next_start.values()) if everyone else float("-inf")
        out, self._held = [], []
        for r in merged:
            # held through a tile of every input that reaches its end: each has seen all of it
            if r["t_stop"] <= horizon or (everyone and len(r["_seen"]) == self.inputs
                                          and not (whole and _going_on(r, newest_end))):
                out.append(r)
            else:
                self._held.append(r)
        for r in out:
            r.pop("_seen", None)
            r.pop("_stream", None)
            r.setdefault("models", [r["model"]])
        out.sort(key=lambda r: (r["t_start"], r["f_low"]))
        self.records_out += len(out)
        return out


def _going_on(r: dict, newest_end: float) -> bool:
    """Whether a record may still grow: cut by the end of the newest tile (no tile has
    seen past it yet)."""
    return "stop" in r.get("tile_edge", []) and r["t_stop"] >= newest_end - EDGE_TOLERANCE_S


def _tile_of(r: dict):
    """The tile a record was found in, across inputs: (input, tile index)."""
    return r.get("_stream", ""), r.get("tile")
