"""PMT <-> Python for the messages between rfdetect blocks.

Every message between the Detector, NMS Merge, Track Assigner and the sinks is a PMT
dict ``{"tile": {...}, "records": [record, ...]}`` (docs/schema.md); statistics are a
PMT dict with ``"schema": "rfdetect.stats/1"``. Any GNU Radio message block (for
example Message Debug) can print them.
"""
import math

import pmt


def _clean(obj):
    # PMT has no None-in-dict trouble, but infinities make invalid JSON downstream
    if isinstance(obj, float) and math.isinf(obj):
        return 1e300 if obj > 0 else -1e300
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def to_pmt(obj) -> "pmt.pmt_t":
    return pmt.to_pmt(_clean(obj))


def from_pmt(msg) -> dict:
    obj = pmt.to_python(msg)
    if not isinstance(obj, dict):
        raise TypeError(f"expected a PMT dict, got {type(obj).__name__}")
    return obj


def tile_message(tile: dict, records: list) -> "pmt.pmt_t":
    return to_pmt({"tile": tile, "records": list(records)})
