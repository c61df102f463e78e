"""Time and frequency truth (issue 13, item 3): a retune or a rate change in the middle
of a tile gives the right Hz and seconds, UTC comes from rx_time or (marked) the host
clock, and a chirp longer than a tile keeps one track. Real flowgraphs, real records."""
import json

import numpy as np
import pmt
import pytest

from gnuradio.rfdetect.inference.model_runtime import EnergyModel
from gnuradio.rfdetect.formats.records import SchemaError, continuation, validate_record
from gnuradio.rfdetect.inference.tile_detector import TileDetector
from gnuradio.rfdetect.formats.sigmf_io import iso_to_unix, new_meta, write_recording

from conftest import RATE, SMALL, SMALL_ARGS, TILE, run_cli
from rf_chain import chirp, noise, rx_time, run_chain, tag, tone

HOP_S = SMALL.hop / RATE
# the sample of each change: in the middle of the third tile (rows 224-351), not on a row
CHANGE = 284 * SMALL.hop + 100


def _ends(recs):
    return sorted((r for r in recs if r["event"] == "end"), key=lambda r: r["t_start"])


def test_a_retune_in_the_middle_of_a_tile_gives_each_side_its_own_hz(tmp_path):
    n = int(0.2 * RATE)
    iq = noise(n) + tone(n, 0.15)  # +300 kHz from the centre, all the time
    tags = [tag(0, "rx_freq", pmt.from_double(100e6)), tag(CHANGE, "rx_freq", pmt.from_double(200e6))]
    recs, _, _, _ = run_chain(tmp_path, iq, tags)
    t_change = CHANGE / RATE
    before, after = [], []
    for r in recs:
        if r["t_stop"] <= t_change + HOP_S:
            before.append(r)
        elif r["t_start"] >= t_change - HOP_S:
            after.append(r)
        else:
            pytest.fail(f"a record straddles the retune at {t_change:.6f} s: {r}")
    assert before and after
    for side, fc in ((before, 100e6), (after, 200e6)):
        for r in side:
            assert r["f_low"] - 5e3 <= fc + 300e3 <= r["f_high"] + 5e3, (fc, r)
            assert r["f_high"] - r["f_low"] < 150e3, r  # a strong tone's window leakage, not a 100 MHz span
    # the tile that holds the retune reported both sides: the tone is on up to the retune
    # and from it (in file mode each side is one record, from the tiles before and after too)
    dets = [r for r in recs if r["event"] != "end"]
    assert max(r["t_stop"] for r in before if r in dets) == pytest.approx(t_change, abs=2 * HOP_S)
    assert min(r["t_start"] for r in after if r in dets) == pytest.approx(t_change, abs=2 * HOP_S)
    assert any(r["tile"] == 2 for r in after if r in dets)  # the after side starts in the tile of the change


def test_a_rate_change_in_the_middle_of_a_tile_gives_summed_seconds_and_its_own_hz(tmp_path):
    n = int(0.25 * RATE)
    iq = noise(n)
    bursts = [(40_000, 80_000), (200_000, 260_000)]  # samples: one before the change, one after
    for s0, s1 in bursts:
        iq[s0:s1] += tone(s1 - s0, 0.15)
    t0 = 1_750_000_000.25
    tags = [tag(0, "rx_rate", pmt.from_double(2e6)), tag(0, "rx_time", rx_time(t0)),
            tag(CHANGE, "rx_rate", pmt.from_double(1e6))]
    recs, _, det, _ = run_chain(tmp_path, iq, tags)
    t_change = CHANGE / 2e6

    def seconds(s):  # the truth: 2 MS/s up to the change, 1 MS/s after it
        return s / 2e6 if s <= CHANGE else t_change + (s - CHANGE) / 1e6
    ends = _ends(recs)
    assert len(ends) == 2, ends
    for (s0, s1), r, fs in zip(bursts, ends, (2e6, 1e6)):
        assert r["t_start"] == pytest.approx(seconds(s0), abs=4 * SMALL.hop / fs), r
        assert r["t_stop"] == pytest.approx(seconds(s1), abs=4 * SMALL.hop / fs), r
        assert r["sample_start"] == pytest.approx(s0, abs=4 * SMALL.hop), r
        # 0.15 cycles per sample are 300 kHz at 2 MS/s and 150 kHz at 1 MS/s
        assert r["f_low"] - 5e3 <= 0.15 * fs <= r["f_high"] + 5e3, r
        assert r["utc_source"] == "rx_time"
        assert iso_to_unix(r["utc_start"]) == pytest.approx(t0 + r["t_start"], abs=1e-6)
        assert iso_to_unix(r["utc_stop"]) == pytest.approx(t0 + r["t_stop"], abs=1e-6)
    assert det.engine.ref.sample_rate == 1e6


def test_without_rx_time_utc_is_the_host_clock_at_the_first_sample_and_says_so(tmp_path):
    n = int(0.15 * RATE)
    iq = noise(n) + tone(n, 0.15)
    recs, _, _, (before, after) = run_chain(tmp_path, iq, [tag(0, "rx_freq", pmt.from_double(915e6))])
    assert recs
    for r in recs:
        assert r["utc_source"] == "host", r
        first_sample = iso_to_unix(r["utc_start"]) - r["t_start"]
        assert before - 0.01 <= first_sample <= after, (before, first_sample, after)


def test_a_sigmf_datetime_gives_rx_time_utc_through_the_detect_command(tmp_path):
    n = int(0.15 * RATE)
    iq = noise(n) + tone(n, 0.15)
    when = "2026-03-01T12:00:00.500000Z"
    meta = write_recording(tmp_path / "dated", iq, new_meta(RATE, "cf32_le", 915e6, datetime=when))[0]
    out = tmp_path / "out.jsonl"
    run_cli("detect", meta, "--model", "energy", "--out", out, "--quiet", *SMALL_ARGS)
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert recs
    for r in recs:
        validate_record(r)
        assert r["utc_source"] == "rx_time", r
        assert iso_to_unix(r["utc_start"]) == pytest.approx(iso_to_unix(when) + r["t_start"], abs=1e-6)


def test_a_record_with_utc_but_no_utc_source_is_refused():
    rec = {"schema": "rfdetect.detection/1", "event": "detection", "t_start": 0.0, "t_stop": 0.1,
           "f_low": 1e6, "f_high": 2e6, "label": "signal", "score": 0.9, "model": "energy", "track_id": None,
           "sample_start": 0, "sample_count": 10, "utc_start": "2026-03-01T12:00:00Z", "utc_stop": None}
    with pytest.raises(SchemaError, match="utc_source"):
        validate_record(rec)
    validate_record(dict(rec, utc_source="host"))


@pytest.mark.parametrize("long_signals", ["auto", "pieces"])
@pytest.mark.parametrize("f0, f1", [(-500e3, 500e3), (500e3, -500e3)], ids=["rising", "falling"])
def test_a_chirp_across_many_tiles_keeps_one_track(tmp_path, f0, f1, long_signals):
    """From a file NMS Merge keeps the chirp whole (one record); in pieces (the real-time
    way), the Track Assigner joins its pieces, whose bands differ tile by tile, into one track."""
    pad, long_ = int(0.05 * RATE), int(0.25 * RATE)  # 0.25 s: eight tiles, 16 overlaps
    n = 2 * pad + long_
    iq = noise(n) + tone(n, 0.4)  # a steady tone at +800 kHz beside it, all the time
    iq[pad:pad + long_] += chirp(long_, f0, f1)
    recs, _, _, _ = run_chain(tmp_path, iq, [tag(0, "rx_freq", pmt.from_double(0.0))], long_signals=long_signals)
    ends = _ends(recs)
    assert len({r["track_id"] for r in recs}) == 2, [(r["event"], r["track_id"], r["t_start"], r["f_low"])
                                                     for r in recs]
    chirp_end = min(ends, key=lambda r: r["f_low"])
    tone_end = max(ends, key=lambda r: r["f_low"])
    assert chirp_end["t_start"] == pytest.approx(pad / RATE, abs=0.005)
    assert chirp_end["t_stop"] == pytest.approx((pad + long_) / RATE, abs=0.005)
    assert chirp_end["f_low"] == pytest.approx(-500e3, abs=20e3)
    assert chirp_end["f_high"] == pytest.approx(500e3, abs=20e3)
    if long_signals == "pieces":
        assert chirp_end["n_detections"] >= 4  # it did come as pieces, joined
    else:
        assert chirp_end["n_detections"] == 1
    assert tone_end["f_low"] <= 800e3 <= tone_end["f_high"] and tone_end["f_high"] - tone_end["f_low"] < 150e3


def test_the_timeline_stays_small_on_a_long_stream_with_tags_on_every_tile():
    """A SigMF recording played with repeat sends its tags every pass, a hopping receiver
    retunes all the time: segments no tile needs any more are forgotten."""
    eng = TileDetector([EnergyModel(SMALL)], SMALL, sample_rate=RATE, **TILE)
    step = TILE["tile_height"] - TILE["overlap"]
    rows = np.zeros((step, SMALL.width), np.float32)
    for k in range(300):
        eng.set_reference(k * step + 5, center_freq=100e6 + 1e6 * (k % 2), rx_time=1.7e9 + k)
        eng.push_rows(rows)
    assert eng.finish(timeout=30)
    eng.stop()
    assert eng.stats()["tiles_done"] >= 299
    assert len(eng.timeline.segments) <= 3, len(eng.timeline.segments)


def _piece(t0, t1, f0, f1, edge):
    return {"t_start": t0, "t_stop": t1, "f_low": f0, "f_high": f1, "tile_edge": edge}


@pytest.mark.parametrize("a, b, continues", [
    # a chirp: 100 kHz per second, pieces of two tiles sharing 0.1 s
    (_piece(0.0, 1.0, 100e3, 200e3, ["stop"]), _piece(0.9, 1.9, 190e3, 290e3, ["start"]), True),
    # the same boxes, not cut by tile edges: two signals side by side, not one
    (_piece(0.0, 1.0, 100e3, 200e3, []), _piece(0.9, 1.9, 190e3, 290e3, []), False),
    # a short burst inside the first piece's time: it does not run on past it
    (_piece(0.0, 1.0, 100e3, 200e3, ["stop"]), _piece(0.9, 0.95, 150e3, 160e3, ["start"]), False),
    # a neighbour that shares far less than the band swept in the common time
    (_piece(0.0, 1.0, 100e3, 200e3, ["stop"]), _piece(0.9, 1.9, 199e3, 300e3, ["start"]), False),
    # a steady signal: IoU as before
    (_piece(0.0, 1.0, 100e3, 200e3, []), _piece(1.0, 2.0, 105e3, 200e3, []), True),
])
def test_continuation_rule(a, b, continues):
    assert (continuation(a, b, 0.5) > 0) == continues
