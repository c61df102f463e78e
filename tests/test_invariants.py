"""Property-based tests (hypothesis) of NMS Merge and Track Assigner invariants."""
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gnuradio.rfdetect.tracking.nms_merge import NmsMerger
from gnuradio.rfdetect.formats.records import box_iou
from gnuradio.rfdetect.tracking.track_assigner import TrackAssigner

RATE = 1e6
TILE_S = 0.1  # each tile covers 0.1 s; consecutive tiles overlap by 0.02 s


@st.composite
def record(draw, tile: int):
    t0 = tile * (TILE_S - 0.02) + draw(st.floats(0.0, TILE_S - 0.002))
    dur = draw(st.floats(0.001, 0.08))
    f0 = draw(st.floats(-4e5, 4e5))
    bw = draw(st.floats(1e3, 1e5))
    t1 = min(t0 + dur, tile * (TILE_S - 0.02) + TILE_S)
    return {"event": "detection", "t_start": t0, "t_stop": max(t1, t0 + 1e-4), "f_low": f0, "f_high": f0 + bw,
            "label": draw(st.sampled_from(["a", "b"])), "score": draw(st.floats(0.05, 1.0)),
            "model": draw(st.sampled_from(["m1", "m2"])), "sample_start": int(t0 * RATE),
            "sample_count": max(1, int((t1 - t0) * RATE)), "tile": tile,
            "tile_edge": draw(st.sampled_from([[], ["start"], ["stop"], ["start", "stop"]]))}


@st.composite
def tiles(draw):
    n = draw(st.integers(1, 6))
    out = []
    for i in range(n):
        recs = draw(st.lists(record(i), max_size=8))
        out.append(({"index": i, "t_start": i * (TILE_S - 0.02), "next_t_start": (i + 1) * (TILE_S - 0.02),
                     "final": i == n - 1}, recs))
    return out


# too_slow: on a CPU shared with other work one draw was seen to take 38 s (not a property failure)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tiles(), st.floats(0.1, 1.0), st.booleans(), st.booleans())
def test_nms_merge_invariants(stream, iou, class_aware, stitch):
    m = NmsMerger(iou_threshold=iou, class_aware=class_aware, stitch=stitch)
    outputs = []
    for tile, recs in stream:
        outputs += m.push(tile, recs)
    n_in = sum(len(r) for _, r in stream)
    # every input is accounted for: emitted, suppressed as a duplicate, or stitched into another
    assert m.records_in == n_in
    assert m.records_out + m.suppressed + m.stitched == n_in
    assert len(outputs) == m.records_out
    # no two outputs of the whole stream overlap beyond the threshold (within a class
    # when class-aware), even across tiles
    for i, a in enumerate(outputs):
        for b in outputs[i + 1:]:
            if not class_aware or a["label"] == b["label"]:
                assert box_iou(a, b) < iou
    # outputs stay within what came in, and name the models that saw them
    t_min = min((r["t_start"] for _, rs in stream for r in rs), default=0)
    t_max = max((r["t_stop"] for _, rs in stream for r in rs), default=0)
    models_in = {r["model"] for _, rs in stream for r in rs}
    for r in outputs:
        assert t_min <= r["t_start"] < r["t_stop"] <= t_max and r["f_low"] < r["f_high"]
        assert r["models"] and set(r["models"]) <= models_in and "_held" not in r
    # nothing is held after the final tile
    assert m._held == []


@settings(max_examples=200, deadline=None)
@given(tiles(), st.floats(0.1, 1.0), st.floats(0.0, 0.05), st.booleans())
def test_track_assigner_invariants(stream, gate, gap, class_aware):
    merger = NmsMerger()
    ta = TrackAssigner(freq_iou_gate=gate, max_gap_s=gap, class_aware=class_aware)
    events, n_dets = [], 0
    for tile, recs in stream:
        merged = merger.push(tile, recs)
        n_dets += len(merged)
        events += ta.push(tile, merged)
    news = [e["track_id"] for e in events if e["event"] == "new"]
    ends = [e["track_id"] for e in events if e["event"] == "end"]
    updates = [e for e in events if e["event"] == "update"]
    # track IDs never repeat, count up from 1, and every track ends exactly once
    assert news == sorted(set(news)) == list(range(1, len(news) + 1))
    assert sorted(ends) == news and ta.active == {}
    # every detection is accounted for: exactly one new or update event each
    assert len(news) + len(updates) == n_dets
    # updates belong to a track that started earlier and has not ended yet
    started, ended = set(), set()
    for e in events:
        if e["event"] == "new":
            started.add(e["track_id"])
        elif e["event"] == "update":
            assert e["track_id"] in started and e["track_id"] not in ended
        else:
            ended.add(e["track_id"])
    # an end record spans all of its track's detections, with one label when class-aware
    for end in (e for e in events if e["event"] == "end"):
        dets = [e for e in events if e["event"] in ("new", "update") and e["track_id"] == end["track_id"]]
        assert end["n_detections"] == len(dets)
        assert end["t_start"] <= min(d["t_start"] for d in dets) and end["t_stop"] >= max(d["t_stop"] for d in dets)
        assert end["f_low"] <= min(d["f_low"] for d in dets) and end["f_high"] >= max(d["f_high"] for d in dets)
        if class_aware:
            assert {d["label"] for d in dets} == {end["label"]}
