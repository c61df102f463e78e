"""Merging detections across models and across overlapping tiles.

Consecutive tiles share ``overlap`` rows, so a signal in the overlap is seen twice
and a signal crossing a tile edge is seen as two truncated pieces. For each tile the
merger takes the new records plus those it held back from the previous tile and:

1. **stitches** pieces cut by a tile edge (the Detector marks them ``tile_edge``):
   two records from different tiles (of the same label when ``class_aware``, unless both
   are one model's: a name may change between tiles; the joined record takes the name of
   the larger piece) whose time spans meet and where the later one
   continues the earlier (:func:`rfdetect.formats.records.continuation`: frequency IoU >=
   ``iou_threshold``, or, for a signal that sweeps such as a chirp, the band both
   saw in the rows their tiles share) become their union, best-matching pairs first; a
   piece that starts in the rows the later tile shares was seen starting there too, so its
   continuation starts with it (within ``STITCH_START_SLACK`` of its length, and at least
   ``STITCH_START_MIN_ROWS`` rows and half a row);
2. **suppresses** duplicates greedily, complete records before ones cut by an edge,
   then by score: a record whose (time x frequency) IoU with a kept record is >=
   ``iou_threshold`` is dropped (of the same label when ``class_aware``, unless both are
   one model's: that model's per-tile NMS ignores labels too), and so is a record cut by a
   tile edge that lies mostly (>= ``containment``) inside a kept record from another tile --
   the part of a long or slanted signal that a neighbouring tile saw whole (over the same
   band whatever its label, a partial view being named less surely than the whole; over
   another band only of the same label when ``class_aware``: a narrow signal inside a wide
   one);
3. emits records that end before the next tile starts (no later tile can see them
   again) and holds back the rest; a record that a held one could yet become a duplicate
   of by growing (a later piece stitched on) waits with it, unchanged, until the two have
   met in a merge or the held one has grown too long for it (a tile or two). A held record
   leaves once a later tile has covered its end (for one joined from pieces, the end of
   its last piece: a signal that ends in the rows the next tile shares waits for that
   tile, which sees its tail again), unless it is still going on (cut by the end of the
   newest tile, where the next tile may continue it) and ``long_signals`` is "whole":
   then it grows until the signal ends, so a signal longer than a tile leaves as one
   record. With "pieces" a record is held no longer than the tile after the one it ends
   in, so latency stays bounded and a long signal leaves as a series of pieces that the
   Track Assigner joins under one track ID.
   "auto" (the default) is "whole" for a Detector in file mode (its tiles say which)
   and "pieces" in real-time mode.

Several Detectors may feed one merger (models trained on different spectrograms, each with
its own STFT Tile and Detector; the tile messages say which Detector by ``stream``, and each
Detector announces itself before its first tile: ``add_input``; ``inputs``: how many to
expect at least). Their tiles differ in length and arrive interleaved, in an order that
depends on how fast each runs. The merger takes them in time order instead (a tile waits
until no other input can still send one that starts earlier), so that the records out, the
tile messages they leave in and the track IDs after them are the same on every run. Each
input's tiles go through steps 1-3 on their own, exactly as a lone Detector's would (another
Detector's records cannot change how its pieces are joined); what an input is done with then
waits for the others. Duplicates across inputs (step 2's rule, between records of different
inputs) are removed a group at a time, records joined by such pairs, once
nothing more can join the group: every input's next tile starts after it, and no record another
input still holds could yet turn out a duplicate of one of its records (the test allows for a
held record to grow in time and in band, as a long signal or a sweep being stitched does; the
one exception: whether a record cut by a tile edge lies inside a long signal still going on is
judged by that signal's band so far). A record that can be no one's duplicate leaves as soon as
every input has passed it. Pieces are not stitched across inputs. The merger's own run ends when every input's has.
"""
from __future__ import annotations

import logging
import numbers
from collections import deque

from ..formats.records import box_iou, continuation, interval_iou, utc_source
from ..inference.postprocess import DEFAULT_UNKNOWN_LABEL as UNKNOWN_LABEL


# how a signal longer than a tile leaves: whole (held until it ends) or in pieces (bounded
# latency); auto: whole when the Detector runs a file, in pieces in real time
LONG_SIGNALS = ("auto", "whole", "pieces")
# a record cut by a tile's end stops where that tile stops, both computed from one sample index
EDGE_TOLERANCE_S = 1e-9
# what the merge orders and compares records by: numbers every record must have
RECORD_KEYS = ("t_start", "t_stop", "f_low", "f_high", "score", "sample_start", "sample_count")
# a piece that starts in the rows the next tile shares was seen starting by that tile too, so
# what continues it there starts where it does: no later than this fraction of its length
# after it (a box over the tail of something else that happens to share its band does not
# continue it; docs/training.md, session 38)
STITCH_START_SLACK = 0.25
# ... and no less than this many of the later tile's rows (plus half a row, so that a start
# exactly that many rows later is not decided by rounding): edges refined from one tile's
# pixels land a row or two from the other's, which for a piece a few rows long is over a
# quarter (session 38 left this open; measured with 2 rows, no tuning set changed;
# docs/training.md session 39)
STITCH_START_MIN_ROWS = 2
log = logging.getLogger("rfdetect.merge")


def labels_agree(a: str, b: str) -> bool:
    """Two labels of one signal: equal, or one of them "signal" (a localised signal whose
    class is uncertain, or the energy detector's), which matches any label."""
    return a == b or UNKNOWN_LABEL in (a, b)


def _join(a: dict, b: dict) -> dict:
    first, last = (a, b) if a["t_start"] <= b["t_start"] else (b, a)
    out = dict(max(a, b, key=lambda r: r["score"]))
    if a["label"] != b["label"]:
        # one signal named two ways (one model's pieces, or "signal" and a name): the name the
        # larger view gave, a known name before "signal"; the score stays the surer piece's
        named = max(a, b, key=lambda r: (r["label"] != UNKNOWN_LABEL, _area(r), r["score"]))
        out["label"], out["_namer"] = named["label"], _namer(named)
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
    # whether a later tile has covered the end: the end of the piece that ends last
    out["_end_seen"] = bool(stop_src.get("_end_seen")) or (
        a["t_stop"] == b["t_stop"] and bool(a.get("_end_seen") or b.get("_end_seen")))
    # the tile the joined record reaches furthest into: a later piece continues it from there
    for k in ("_tile_t0", "_row_s"):
        out.pop(k, None)
        if k in stop_src:
            out[k] = stop_src[k]
    return out


def _namer(r: dict) -> str:
    """The model that gave ``r`` its label: its own ``model`` unless the merge gave it another
    model's name (``_namer``, internal)."""
    return r.get("_namer", r["model"])


def _area(r: dict) -> float:
    return (r["t_stop"] - r["t_start"]) * (r["f_high"] - r["f_low"])


def _inside_fraction(r: dict, other: dict) -> float:
    """Fraction of ``r``'s (time x frequency) area inside ``other``."""
    dt = min(r["t_stop"], other["t_stop"]) - max(r["t_start"], other["t_start"])
    df = min(r["f_high"], other["f_high"]) - max(r["f_low"], other["f_low"])
    area = _area(r)
    return dt * df / area if dt > 0 and df > 0 and area > 0 else 0.0


class NmsMerger:
    def __init__(self, iou_threshold: float = 0.5, class_aware: bool = True, stitch: bool = True,
                 containment: float = 0.7, inputs: int = 1, long_signals: str = "auto"):
        if not 0.0 < iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold={iou_threshold} must be in (0, 1]")
        if int(inputs) != inputs or inputs < 1:
            raise ValueError(f"inputs={inputs} must be a whole number >= 1 (the Detectors that feed the merger)")
        if not 0.0 < containment <= 1.0:
            raise ValueError(f"containment={containment} must be in (0, 1]")
        self.iou_threshold = float(iou_threshold)
        self.class_aware = bool(class_aware)
        self.stitch = bool(stitch)
        self.containment = float(containment)
        self.inputs = int(inputs)
        if long_signals not in LONG_SIGNALS:
            raise ValueError(f"long_signals={long_signals!r} must be one of {', '.join(LONG_SIGNALS)}")
        self.long_signals = long_signals
        self._inputs: dict = {}  # the tile's "stream" -> _Input
        self._waiting: list[dict] = []  # done by their input, waiting for the others
        self.records_in = 0
        self.records_out = 0
        self.records_rejected = 0
        self.suppressed = 0
        self.stitched = 0

    def _same_class(self, a, b) -> bool:
        # "signal" (a localised signal whose class is uncertain, or the energy detector's)
        # is the same signal as a named one where they overlap, not a second one
        return not self.class_aware or labels_agree(a["label"], b["label"])

    @staticmethod
    def _one_model(a, b) -> bool:
        """Records one model named, from one input: pieces or duplicates of one signal whatever
        the model names them. The tiles that see a signal may name it differently (split by
        names, its pieces stayed apart; docs/training.md, session 40). The model that named a
        record (:func:`_namer`) follows its name: a kept `signal` box of another model that
        takes a duplicate's name, or a join that takes the larger piece's, takes its model
        as the namer too."""
        return _namer(a) == _namer(b) and a.get("_stream") == b.get("_stream")

    def _stitch_score(self, a, b) -> float:
        """> 0 when ``a`` and ``b`` are pieces of one signal cut by a tile edge."""
        if _tile_of(a) == _tile_of(b) or not (self._same_class(a, b) or self._one_model(a, b)) \
                or a.get("_final") or b.get("_final"):
            return 0.0
        first, second = (a, b) if a["t_start"] <= b["t_start"] else (b, a)
        if "stop" not in first.get("tile_edge", []) and "start" not in second.get("tile_edge", []):
            return 0.0
        if second["t_start"] > first["t_stop"]:
            return 0.0
        t0_first, t0_second = first.get("_tile_t0"), second.get("_tile_t0")
        slack = max(STITCH_START_SLACK * (first["t_stop"] - first["t_start"]),
                    (STITCH_START_MIN_ROWS + 0.5) * second.get("_row_s", 0.0))
        if t0_first is not None and t0_second is not None and t0_first < t0_second <= first["t_start"] \
                and second["t_start"] - first["t_start"] > slack:
            return 0.0
        return continuation(first, second, self.iou_threshold)

    def _suppresses(self, kept: dict, r: dict) -> bool:
        """Whether ``kept`` makes ``r`` a duplicate (step 2's rule), within a class when
        class-aware, with two exceptions. One model's records whose IoU reaches
        ``iou_threshold`` are one signal whatever their labels: its per-tile NMS ignores labels
        too, and the tiles that see a signal may name it differently (docs/training.md, session
        40). And a piece cut by a tile edge lying inside a record of another tile over the same
        band (frequency IoU >= ``iou_threshold``), of this input or another, goes whatever its
        label: a partial view, named less surely than the whole (a chirp's tail named `chirp`,
        the chirp `lora`). Two models' records of one signal named two ways stay apart (their
        scores do not compare: measured on VHF/UHF tuning sets, where `pulse` and `carrier`
        run beside the networks, session 40), and so does a narrow signal of another label
        inside a wide one."""
        if self._cut_inside(kept, r) \
                and interval_iou(kept["f_low"], kept["f_high"], r["f_low"], r["f_high"]) >= self.iou_threshold:
            return True
        if self._same_class(kept, r):
            return self._duplicate(kept, r)
        return self._one_model(kept, r) and box_iou(kept, r) >= self.iou_threshold

    def _cut_inside(self, kept: dict, r: dict) -> bool:
        """``r``, cut by a tile edge, lies mostly inside ``kept`` from another tile."""
        return bool(r.get("tile_edge")) and _tile_of(kept) != _tile_of(r) \
            and _inside_fraction(r, kept) >= self.containment

    def _duplicate(self, kept: dict, r: dict) -> bool:
        return box_iou(kept, r) >= self.iou_threshold or self._cut_inside(kept, r)

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
        return self._suppress(recs, lambda r: (bool(r.get("tile_edge")), -r["score"]))

    def _suppress(self, records: list[dict], order, across_inputs: bool = False) -> list[dict]:
        """Greedy NMS in ``order`` (a sort key): a record goes when a kept one duplicates it
        (``across_inputs``: a kept one of another input), and the kept one takes its models
        and, for "signal", its name."""
        kept: list[dict] = []
        for r in sorted(records, key=order):
            dup = next((k for k in kept if (not across_inputs or k["_stream"] != r["_stream"])
                        and self._suppresses(k, r)), None)
            if dup is None:
                kept.append(r)
                continue
            self.suppressed += 1
            if dup["label"] == UNKNOWN_LABEL and r["label"] != UNKNOWN_LABEL:
                dup["label"], dup["_namer"] = r["label"], _namer(r)  # the name a duplicate knew
            dup["models"] = sorted(set(dup.get("models", [dup["model"]])) | set(r.get("models", [r["model"]])))
        return kept

    def add_input(self, stream: str) -> None:
        """An input (a Detector's ``stream``) that will send tiles: nothing it could
        duplicate leaves before it has passed that time."""
        if stream not in self._inputs:
            self._inputs[stream] = _Input()
            self.inputs = max(self.inputs, len(self._inputs))

    def _input_of(self, tile: dict) -> "_Input":
        stream = tile.get("stream", "")
        # an input nobody announced (a merger used without hellos) counts from its first tile
        if stream not in self._inputs and len(self._inputs) == self.inputs:
            self.inputs += 1
        return self._inputs.setdefault(stream, _Input())

    @property
    def finished(self) -> bool:
        """Every input's final tile has been merged."""
        return len(self._inputs) == self.inputs and all(i.next_start == float("inf") for i in self._inputs.values())

    @property
    def pending(self) -> list[dict]:
        """Records in, not yet out: in tiles waiting for an earlier tile of another input, held
        by their input's merge, or waiting for the other inputs."""
        return [r for i in self._inputs.values() for r in i.held + [r for _, rs in i.queued for r in rs]] + self._waiting

    def out_tile(self, tile: dict) -> dict:
        """The tile message to forward after :meth:`push` of ``tile``: with one input, ``tile``
        itself (starting no later than a record that waits for a held one); with several, one
        that says what holds for all of them (time starts no earlier than the last merged tile
        of the slowest input or a record still waiting, so that the Track Assigner does not end
        the track it continues; and the run is final once every input's is)."""
        waits = [r["t_start"] for i in self._inputs.values() for r in i.held if r.get("_final")]
        if self.inputs == 1:
            return dict(tile, t_start=min([tile.get("t_start", float("-inf"))] + waits)) if waits else tile
        # an input with no tile merged yet sends nothing before the tiles merged so far (time order)
        starts = [i.last_start for i in self._inputs.values() if i.last_start > float("-inf")] + [
            r["t_start"] for r in self._waiting] + waits or [tile.get("t_start", float("-inf"))]
        out = dict(tile, t_start=min(starts),
                   next_t_start=min(i.next_start for i in self._inputs.values()), final=self.finished)
        if not out["final"]:
            out.pop("run", None)
        return out

    def push(self, tile: dict, records: list[dict]) -> list[dict]:
        """Records of one tile in, records that are final out (those of each tile merged
        now, sorted by time): :meth:`push_tiles` without the tiles."""
        return [r for _, recs in self.push_tiles(tile, records) for r in recs]

    def push_tiles(self, tile: dict, records: list[dict]) -> list[tuple[dict, list[dict]]]:
        """One tile message in; the tile messages to forward, each as (tile, its records out).
        With one input: ``tile`` and what it makes final. With several, each tile waits until
        no other input can still send one that comes before it in time (:func:`_tile_order`),
        and the tiles are merged in that order, whatever order their Detectors' threads sent
        them in: each merged tile gives one message (:meth:`out_tile`). So the records out,
        the messages they come in and the Track Assigner's events after them are the same
        on every run of one recording."""
        inp = self._input_of(tile)
        records = self._valid(tile, records)
        self.records_in += len(records)
        if self.inputs == 1:
            recs = self._out(self._push_input(inp, tile.get("stream", ""), tile, records))
            return [(self.out_tile(tile), recs)]
        inp.queued.append((tile, records))
        return self._merge_queued()

    def _valid(self, tile: dict, records: list[dict]) -> list[dict]:
        """``records`` without those the merge cannot order or compare (each named in one logged
        error): one bad record must not stop the tiles of every input queued behind it."""
        good = []
        for r in records:
            bad = next((k for k in RECORD_KEYS if not isinstance(r.get(k), numbers.Real) or r[k] != r[k]), None)
            if bad is None and r["t_stop"] >= r["t_start"] and r["f_high"] >= r["f_low"] and "label" in r \
                    and "model" in r:
                good.append(r)
                continue
            self.records_rejected += 1
            log.error("NMS Merge: a record of tile %s (stream %s) has %s; it is dropped: %r", tile.get("index"),
                      tile.get("stream", ""), f"no number {bad!r}" if bad else "no label or model, or an inverted box", r)
        return good

    def _merge_queued(self) -> list[tuple[dict, list[dict]]]:
        out = []
        while len(self._inputs) >= self.inputs:
            heads = [(_tile_order(i.queued[0][0], s), s) for s, i in self._inputs.items() if i.queued]
            if not heads:
                break
            first, stream = min(heads)
            # an input with nothing queued sends its next tile from next_start on (-inf: not
            # heard from yet); one starting where this one does may yet come first
            if any(not i.queued and i.next_start <= first[0] for s, i in self._inputs.items() if s != stream):
                break
            inp = self._inputs[stream]
            tile, records = inp.queued.popleft()
            self._waiting += self._push_input(inp, stream, tile, records)
            recs = self._out(self._across_inputs())
            out.append((self.out_tile(tile), recs))
        return out

    def _out(self, out: list[dict]) -> list[dict]:
        for r in out:
            for k in ("_seen", "_end_seen", "_stream", "_rank", "_growing", "_final", "_tile_t0", "_row_s", "_namer"):
                r.pop(k, None)
            r.setdefault("models", [r["model"]])
        out.sort(key=lambda r: (r["t_start"], r["f_low"], r["t_stop"], r["f_high"], str(r["label"])))
        self.records_out += len(out)
        return out

    def _push_input(self, inp: "_Input", stream: str, tile: dict, records: list[dict]) -> list[dict]:
        """One input's tile merged with what that input holds, exactly as a lone Detector's
        would be: -> the records no later tile of this input can change."""
        inp.next_start = float("inf") if tile.get("final") else tile.get("next_t_start", float("inf"))
        inp.last_start = tile.get("t_start", float("-inf"))
        reach = float("inf") if tile.get("final") else tile.get("t_stop", float("inf"))
        whole = self.long_signals == "whole" or (self.long_signals == "auto" and tile.get("mode") == "file")
        for r in inp.held:
            if reach >= r["t_stop"]:
                r["_seen"].add(stream)
                r["_end_seen"] = True
        rank = _tile_order(tile, stream)[2:]  # which input, the same on every run
        t0 = tile.get("t_start")
        where = {} if t0 is None else {"_tile_t0": float(t0)}
        if t0 is not None and tile.get("rows") and tile.get("t_stop") is not None:
            where["_row_s"] = (float(tile["t_stop"]) - float(t0)) / float(tile["rows"])
        merged = self.merge(inp.held + [dict(r, _seen=set(), _stream=stream, _rank=rank, **where)
                                        for r in records])
        done, inp.held = [], []
        for r in merged:
            # held through a later tile that reaches its end: the input has seen all of it
            going_on = _going_on(r, reach)
            growing = whole and going_on
            # one that ends past the next tile's start waits for that tile, which sees its end
            # again as a piece cut by its start edge, unless a later tile has seen its end: a
            # piece held through a tile and joined to one ending there has not (the tail would
            # leave twice). One going on at this tile's end leaves in pieces ("pieces").
            seen = r["_seen"] if going_on else r.get("_end_seen")
            if r["t_stop"] <= inp.next_start or (seen and not growing):
                r.pop("_growing", None)
                done.append(r)
            else:
                r["_growing"] = growing
                inp.held.append(r)
        # a held record may yet grow (a later piece stitched on) into a duplicate of one that
        # is done: that one waits with it, unchanged (no piece joins it), until the two have
        # met in a merge or the held one can no longer become its duplicate
        out = []
        for r in done:
            if any(self._may_become_duplicates(h, r, cut_inside=False) for h in inp.held if not h.get("_final")):
                r["_final"] = True
                inp.held.append(r)
            else:
                out.append(r)
        return out

    def _across_inputs(self) -> list[dict]:
        """Duplicates across inputs removed from the records their inputs are done with, a
        group at a time (records joined by pairs of different inputs that are duplicates by
        step 2's rule, whatever their labels), once nothing more can join the group: every
        input's next tile starts after it, and no record another input still holds could yet
        turn out a duplicate of one of its records. The outcome is then the same whatever
        order the inputs' tiles came in."""
        if len(self._inputs) < self.inputs:
            return []
        horizon = min(i.next_start for i in self._inputs.values())
        held = [(stream, h) for stream, i in self._inputs.items() for h in i.held]

        def ready(r):
            return r["t_stop"] <= horizon and not any(
                stream != r["_stream"] and self._may_become_duplicates(h, r) for stream, h in held)
        out, waiting = [], []
        for group in _groups(self._waiting, self._duplicates_across):
            if all(ready(r) for r in group):
                # complete records first, then by score; the rest of the key makes the order
                # total. Records of one input were merged with each other already.
                out += self._suppress(group, _priority, across_inputs=True)
            else:
                waiting += group
        self._waiting = waiting
        return out

    def _duplicates_across(self, a: dict, b: dict) -> bool:
        """Whether step 2 could drop one of ``a``, ``b`` (different inputs) for the other."""
        return a["_stream"] != b["_stream"] and (self._duplicate(a, b) or self._duplicate(b, a))

    def _may_become_duplicates(self, h: dict, r: dict, cut_inside: bool = True) -> bool:
        """Whether ``h``, a record its input still holds, may yet be found a duplicate of ``r``
        or ``r`` of it. ``h`` may still grow, later in time and in band by any amount (a sweep
        stitched on), and back in time no further than its input's next tile, which starts
        after ``r`` ends; its area only grows, while ``r`` is final. So the IoU test and the
        test of ``h`` inside ``r`` take only time and areas. Whether ``r``, cut by a tile edge,
        lies inside ``h`` takes ``h``'s band as it is when ``h`` grows until its signal ends (a
        carrier through a whole file would otherwise hold every cut record of another input,
        whatever its band, as long); a band that grows later onto such a record leaves the two
        side by side. Without ``cut_inside`` that last test is left out (one input's own
        records: a cut record that the input's merge kept beside a long signal would otherwise
        wait for as long as the signal lasts)."""
        shared = r["t_stop"] - max(r["t_start"], h["t_start"])
        if shared <= 0:
            return False
        length, band = r["t_stop"] - r["t_start"], r["f_high"] - r["f_low"]
        h_length = h["t_stop"] - h["t_start"]
        area = max(h_length * (h["f_high"] - h["f_low"]), 1e-30)
        # the IoU is at most shared / the longer of the two, and at most r's area over h's
        iou = shared >= self.iou_threshold * max(length, h_length) and length * band >= self.iou_threshold * area
        h_inside = shared >= self.containment * h_length and shared * band >= self.containment * area
        common = band
        if h.get("_growing"):
            common = max(min(h["f_high"], r["f_high"]) - max(h["f_low"], r["f_low"]), 0.0)
        r_inside = cut_inside and bool(r.get("tile_edge")) and shared * common >= self.containment * length * band
        return iou or r_inside or h_inside

class _Input:
    """What the merger knows of one input: the tiles it sent that wait to be merged, the
    records its merge holds, where its next tile starts, and where its last merged one
    started."""

    def __init__(self):
        self.queued: deque = deque()  # (tile, records)
        self.held: list[dict] = []
        self.next_start = float("-inf")
        self.last_start = float("-inf")


def _priority(r: dict) -> tuple:
    # the input's rank (not its stream, a random token) settles records alike in all else
    return (bool(r.get("tile_edge")), -r["score"], r["t_start"], r["f_low"], r["t_stop"], r["f_high"],
            str(r["label"]), str(r.get("model")), r["_rank"])


def _tile_order(tile: dict, stream: str) -> tuple:
    """The order tiles of several inputs are merged in: by time, then by what the Detector
    runs (``branch``), then by the order the Detector blocks were made in (``detector``): the
    same on every run, where ``stream`` is a random token."""
    return (tile.get("t_start", float("-inf")), tile.get("t_stop", float("-inf")), str(tile.get("branch", "")),
            int(tile.get("detector", 0)), stream)


def _groups(records: list[dict], linked) -> list[list[dict]]:
    """``records`` in groups joined by ``linked`` pairs (which overlap in time), each group in
    the given order."""
    parent = list(range(len(records)))

    def root(k):
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k
    order = sorted(range(len(records)), key=lambda k: records[k]["t_start"])
    for n, a in enumerate(order):
        for b in order[n + 1:]:
            if records[b]["t_start"] >= records[a]["t_stop"]:
                break
            if linked(records[a], records[b]):
                parent[root(a)] = root(b)
    groups: dict = {}
    for k in range(len(records)):
        groups.setdefault(root(k), []).append(records[k])
    return list(groups.values())


def _going_on(r: dict, newest_end: float) -> bool:
    """Whether a record may still grow: cut by the end of the newest tile (no tile has
    seen past it yet)."""
    return "stop" in r.get("tile_edge", []) and r["t_stop"] >= newest_end - EDGE_TOLERANCE_S


def _tile_of(r: dict):
    """The tile a record was found in, across inputs: (input, tile index)."""
    return r.get("_stream", ""), r.get("tile")
