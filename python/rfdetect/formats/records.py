"""The detection record (schema ``rfdetect.detection/1``), documented in docs/schema.md.

One JSON object per detection or track event. The same dicts travel between the
blocks as PMT messages, are published over ZeroMQ, written as JSONL lines, and
become SigMF annotations.
"""
from __future__ import annotations

import json
import math
from typing import Iterable, Optional

SCHEMA = "rfdetect.detection/1"
EVENTS = ("detection", "new", "update", "end")
STATS_SCHEMA = "rfdetect.stats/1"
# where utc_start/utc_stop come from: the source's rx_time tags (SigMF core:datetime), or
# the host clock at the first sample (the source gave no time)
UTC_SOURCES = ("rx_time", "host")

# name -> (allowed types, may be null)
FIELDS = {
    "schema": ((str,), False),
    "event": ((str,), False),
    "t_start": ((int, float), False),
    "t_stop": ((int, float), False),
    "f_low": ((int, float), False),
    "f_high": ((int, float), False),
    "label": ((str,), False),
    "score": ((int, float), False),
    "model": ((str,), False),
    "track_id": ((int,), True),
    "sample_start": ((int,), False),
    "sample_count": ((int,), False),
    "utc_start": ((str,), True),
    "utc_stop": ((str,), True),
}
OPTIONAL_FIELDS = {
    "snr_db": (int, float),
    "tile": (int,),
    "tile_edge": (list,),
    "models": (list,),
    "n_detections": (int,),
    "utc_source": (str,),
}


def utc_source(*sources) -> Optional[str]:
    """The ``utc_source`` of a record whose UTC times come from ``sources``: "rx_time"
    only when every one is the source's own time; "host" when any is the host clock."""
    known = [s for s in sources if s is not None]
    if not known:
        return None
    return "rx_time" if all(s == "rx_time" for s in known) else "host"


class SchemaError(ValueError):
    pass


def validate_record(rec: dict) -> dict:
    """Raise :class:`SchemaError` naming the first problem; return ``rec``."""
    if not isinstance(rec, dict):
        raise SchemaError(f"record must be an object, got {type(rec).__name__}")
    for name, (types, nullable) in FIELDS.items():
        if name not in rec:
            raise SchemaError(f"record lacks field {name!r}")
        v = rec[name]
        if v is None and nullable:
            continue
        if isinstance(v, bool) or not isinstance(v, types):
            raise SchemaError(f"field {name!r} has type {type(v).__name__}")
        if isinstance(v, float) and not math.isfinite(v):
            raise SchemaError(f"field {name!r} is not finite")
    if rec["schema"] != SCHEMA:
        raise SchemaError(f"schema is {rec['schema']!r}, expected {SCHEMA!r}")
    if rec["event"] not in EVENTS:
        raise SchemaError(f"event {rec['event']!r} is not one of {EVENTS}")
    if rec["event"] != "detection" and rec["track_id"] is None:
        raise SchemaError(f"a {rec['event']!r} event needs a track_id")
    if not rec["t_stop"] >= rec["t_start"]:
        raise SchemaError("t_stop < t_start")
    if not rec["f_high"] >= rec["f_low"]:
        raise SchemaError("f_high < f_low")
    if not 0.0 <= rec["score"] <= 1.0:
        raise SchemaError("score outside [0, 1]")
    if rec["sample_start"] < 0 or rec["sample_count"] < 0:
        raise SchemaError("negative sample_start or sample_count")
    for name, types in OPTIONAL_FIELDS.items():
        if name in rec and rec[name] is not None and not isinstance(rec[name], types):
            raise SchemaError(f"field {name!r} has type {type(rec[name]).__name__}")
    if rec["utc_start"] is not None or rec["utc_stop"] is not None:
        if rec.get("utc_source") not in UTC_SOURCES:
            raise SchemaError(f"a record with UTC times needs utc_source in {UTC_SOURCES}, "
                              f"got {rec.get('utc_source')!r}")
    return rec


def topic(rec: dict) -> str:
    """ZeroMQ topic of a record: ``detection``, ``track.new``, ``track.update``, ``track.end``."""
    ev = rec.get("event", "detection")
    return "detection" if ev == "detection" else f"track.{ev}"


def to_json(rec: dict) -> str:
    return json.dumps(rec, separators=(",", ":"), sort_keys=True)


def to_annotation(rec: dict) -> dict:
    """SigMF annotation of a detection record (core: fields plus rfdetect: extras)."""
    ann = {
        "core:sample_start": int(rec["sample_start"]),
        "core:sample_count": int(rec["sample_count"]),
        "core:freq_lower_edge": float(rec["f_low"]),
        "core:freq_upper_edge": float(rec["f_high"]),
        "core:label": rec["label"],
        "core:generator": "gr-rfdetect",
        "rfdetect:score": float(rec["score"]),
        "rfdetect:model": rec["model"],
        "rfdetect:t_start": float(rec["t_start"]),
        "rfdetect:t_stop": float(rec["t_stop"]),
    }
    if rec.get("track_id") is not None:
        ann["rfdetect:track_id"] = int(rec["track_id"])
    if rec.get("snr_db") is not None:
        ann["rfdetect:snr_db"] = float(rec["snr_db"])
    return ann


def from_annotation(ann: dict, sample_rate: float) -> dict:
    """A SigMF annotation as a (time, frequency) box dict, for comparisons and plots."""
    s0 = int(ann["core:sample_start"])
    n = int(ann.get("core:sample_count", 0))
    return {
        "t_start": s0 / sample_rate, "t_stop": (s0 + n) / sample_rate,
        "f_low": float(ann.get("core:freq_lower_edge", float("nan"))),
        "f_high": float(ann.get("core:freq_upper_edge", float("nan"))),
        "label": ann.get("core:label", ""),
        "score": float(ann.get("rfdetect:score", 1.0)),
        "track_id": ann.get("rfdetect:track_id"),
    }


def box_iou(a: dict, b: dict) -> float:
    """IoU of two records' (time, frequency) rectangles, in seconds x Hz."""
    dt = min(a["t_stop"], b["t_stop"]) - max(a["t_start"], b["t_start"])
    df = min(a["f_high"], b["f_high"]) - max(a["f_low"], b["f_low"])
    if dt <= 0 or df <= 0:
        return 0.0
    inter = dt * df
    area = lambda r: (r["t_stop"] - r["t_start"]) * (r["f_high"] - r["f_low"])  # noqa: E731
    union = area(a) + area(b) - inter
    return inter / union if union > 0 else 0.0


def interval_iou(a0, a1, b0, b1) -> float:
    inter = min(a1, b1) - max(a0, b0)
    if inter <= 0:
        return 0.0
    union = max(a1, b1) - min(a0, b0)
    return inter / union if union > 0 else 0.0


# a piece cut by a tile edge continues the piece before it when their frequency ranges
# share at least this fraction of the band the signal is expected to sweep in their
# common time (boxes are a pixel or two loose, the sweep is estimated from the boxes)
SWEEP_MATCH = 0.5


def continuation(a: dict, b: dict, iou_gate: float) -> float:
    """How well record ``b`` continues the signal of record ``a``; 0 when it does not.

    A signal that keeps its band continues when the frequency IoU is >= ``iou_gate``
    (the score is that IoU). A signal that moves, a chirp, does not: the piece one
    tile saw and the piece the next tile saw cover different bands, and share only the
    band swept in the rows the two tiles share. So when ``a`` was cut by the end of
    its tile and ``b`` by the start of the next (``tile_edge``), they overlap in time,
    and ``b`` runs on past ``a``, ``b`` continues ``a`` if their frequency ranges share
    at least SWEEP_MATCH of the band that either piece, swept corner to corner at its
    own rate (its width over its duration), covers in the shared time. The score is
    then below ``iou_gate``, so that a match that keeps its band wins over a sweep."""
    iou = interval_iou(a["f_low"], a["f_high"], b["f_low"], b["f_high"])
    if iou >= iou_gate:
        return iou
    if "stop" not in (a.get("tile_edge") or []) or "start" not in (b.get("tile_edge") or []):
        return 0.0
    shared = min(a["t_stop"], b["t_stop"]) - max(a["t_start"], b["t_start"])
    common = min(a["f_high"], b["f_high"]) - max(a["f_low"], b["f_low"])
    if shared <= 0 or common <= 0 or b["t_start"] < a["t_start"] or b["t_stop"] <= a["t_stop"]:
        return 0.0
    swept = max((r["f_high"] - r["f_low"]) * min(1.0, shared / (r["t_stop"] - r["t_start"]))
                for r in (a, b) if r["t_stop"] > r["t_start"])
    if common < SWEEP_MATCH * swept:
        return 0.0
    return iou_gate * min(1.0, common / swept) * 0.999


def read_jsonl(path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def match_boxes(truth: Iterable[dict], found: Iterable[dict], iou: float = 0.5,
                class_aware: bool = False) -> tuple[list[Optional[int]], list[int]]:
    """Greedy one-to-one matching by IoU: -> (index of the match for each truth box or
    None, indices of unmatched found boxes)."""
    truth, found = list(truth), list(found)
    pairs = sorted(((box_iou(t, f), i, j) for i, t in enumerate(truth) for j, f in enumerate(found)
                    if not class_aware or t["label"] == f["label"]), reverse=True)
    t_match: list[Optional[int]] = [None] * len(truth)
    used = set()
    for v, i, j in pairs:
        if v < iou:
            break
        if t_match[i] is None and j not in used:
            t_match[i] = j
            used.add(j)
    return t_match, [j for j in range(len(found)) if j not in used]


def format_record(r: dict) -> str:
    """One human-readable line for a record (used by ``rfdetect detect`` and ``listen``)."""
    tid = r.get("track_id")
    track = f"#{tid:<4d}" if isinstance(tid, int) else "  -  "
    return (f"{r.get('event', 'detection'):<9s} {track} {r.get('label', '?'):<12s} "
            f"t={r['t_start']:9.4f}-{r['t_stop']:9.4f} s  "
            f"f={r['f_low'] / 1e6:11.6f}-{r['f_high'] / 1e6:11.6f} MHz  "
            f"score={r.get('score', 0):.2f}  {r.get('model', '')}")


def format_stats(st: dict) -> str:
    """One line for a statistics message (``rfdetect listen``)."""
    lat = (st.get("publisher") or {}).get("latency_ms") or {}
    parts = [f"stats     tiles={st.get('tiles_done')} dropped={st.get('tiles_dropped')}"]
    if lat.get("tiles"):
        parts.append(f"latency p50={lat['p50']:.0f} p99={lat['p99']:.0f} ms")
    for name, m in (st.get("models") or {}).items():
        err = f" errors={m['errors']}" if m.get("errors") else ""
        parts.append(f"{name}: {m.get('latency_ms_p50', 0):.0f} ms {m.get('backend', '')}{err}")
    return "  ".join(parts)
