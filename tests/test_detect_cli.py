"""`rfdetect detect` end to end: real flowgraph, real files, real ZeroMQ sockets."""
import json
import threading
import time

import numpy as np
import zmq

from gnuradio.rfdetect.formats.records import from_annotation, match_boxes, read_jsonl, validate_record
from gnuradio.rfdetect.formats.sigmf_io import SigMFRecording, new_meta, write_recording

from conftest import RATE, SMALL, SMALL_ARGS, TILE, run_cli

NOISE_FALSE_ALARM_BOUND = 2  # per 0.6 s of pure noise (~18 tiles of 128x512)


def detections(path):
    return [r for r in read_jsonl(path) if r["event"] in ("new", "update")]


def truth_boxes(recording):
    rec = SigMFRecording.open(recording)
    out = []
    for a in rec.annotations:
        b = from_annotation(a, rec.sample_rate)
        b["snr_db"] = a["rfdetect:snr_db"]
        out.append(b)
    return out


def test_energy_finds_every_signal_above_10db(synth_dir, tmp_path):
    total = 0
    for i, rec in enumerate(sorted(synth_dir.glob("*.sigmf-meta"))):
        out = tmp_path / f"d{i}.jsonl"
        run_cli("detect", rec, "--model", "energy", "--out", out, "--quiet", *SMALL_ARGS)
        found = detections(out)
        for r in read_jsonl(out):
            validate_record(r)
        truth = [t for t in truth_boxes(rec) if t["snr_db"] >= 10]
        total += len(truth)
        matched, extra = match_boxes(truth, found, iou=0.5)
        missed = [t for t, m in zip(truth, matched) if m is None]
        assert not missed, f"{rec.name}: missed {missed}"
        assert len(extra) <= 2, f"{rec.name}: {len(extra)} detections match no signal"
    assert total >= 10


def test_few_false_alarms_on_noise(noise_recording, tmp_path):
    out = tmp_path / "n.jsonl"
    run_cli("detect", noise_recording, "--model", "energy", "--out", out, "--quiet", *SMALL_ARGS)
    assert len(detections(out)) <= NOISE_FALSE_ALARM_BOUND


def _write_boundary_recording(path, seed=3):
    """One OFDM-like burst straddling the boundary between tiles 0 and 1."""
    rng = np.random.default_rng(seed)
    n = 200_000
    iq = (rng.standard_normal(n) + 1j * rng.standard_normal(n)) / np.sqrt(2)
    step_samples = (TILE["tile_height"] - TILE["overlap"]) * SMALL.hop
    s0, s1 = step_samples - 20000, step_samples + 30000  # longer than the overlap, crosses the edge
    burst = (rng.standard_normal(s1 - s0) + 1j * rng.standard_normal(s1 - s0))
    X = np.fft.fft(burst)
    f = np.fft.fftfreq(len(burst), 1 / RATE)
    X[(f < 100e3) | (f > 300e3)] = 0
    burst = np.fft.ifft(X)
    burst *= np.sqrt(10 ** 2.0 * 0.1 / np.mean(np.abs(burst) ** 2))  # 20 dB in its 200 kHz
    iq[s0:s1] += burst
    meta = new_meta(RATE, "cf32_le", 100e6)
    meta["annotations"] = [{"core:sample_start": s0, "core:sample_count": s1 - s0,
                            "core:freq_lower_edge": 100.1e6, "core:freq_upper_edge": 100.3e6, "core:label": "x"}]
    write_recording(path, iq.astype(np.complex64), meta)
    return s0, s1


def test_signal_crossing_a_tile_boundary_keeps_one_track(tmp_path):
    _write_boundary_recording(tmp_path / "b")
    out = tmp_path / "b.jsonl"
    run_cli("detect", tmp_path / "b.sigmf-meta", "--model", "energy", "--out", out, "--quiet", *SMALL_ARGS)
    recs = read_jsonl(out)
    dets = [r for r in recs if r["event"] in ("new", "update")]
    assert dets, "the burst was not detected"
    assert len({r["track_id"] for r in dets}) == 1
    ends = [r for r in recs if r["event"] == "end"]
    assert len(ends) == 1
    edge_t = TILE["tile_height"] * SMALL.hop / RATE  # end of tile 0
    assert ends[0]["t_start"] < edge_t < ends[0]["t_stop"]
    assert ends[0]["t_stop"] - ends[0]["t_start"] > 0.9 * 50000 / RATE


def test_zmq_subscriber_receives_schema_valid_json_and_sigmf_reads_back(recording, tmp_path):
    import sigmf
    port = 45000 + int(time.time() * 1000) % 5000
    addr = f"tcp://127.0.0.1:{port}"
    received = []
    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.connect(addr)
    sub.setsockopt_string(zmq.SUBSCRIBE, "")
    stop = threading.Event()

    def listen():
        while not stop.is_set():
            if sub.poll(100):
                topic, payload = sub.recv_multipart()
                received.append((topic.decode(), json.loads(payload)))

    th = threading.Thread(target=listen)
    th.start()
    try:
        from gnuradio.rfdetect.apps.detect_flowgraph import DetectOptions, run_detect
        out = tmp_path / "z.jsonl"
        opt = DetectOptions(models=["energy"], params=SMALL, out=str(out), zmq=addr, zmq_wait_s=10, sigmf_out=str(tmp_path / "ann"),
                            **TILE)
        res = run_detect(str(recording), opt, handle_signals=False)
        time.sleep(0.5)
    finally:
        stop.set()
        th.join()
        sub.close(linger=0)
    lines = read_jsonl(out)
    records = [p for t, p in received if t != "stats"]
    assert res["zmq"]["dropped"] == 0
    missing = [l for l in lines if l not in records]
    assert len(records) == len(lines) > 0, ("missing", missing[:2], "sent", res["zmq"])
    stats = [p for t, p in received if t == "stats"]
    assert stats and stats[-1]["final"] and stats[-1]["tiles_done"] == res["stats"]["tiles_done"]
    energy = stats[-1]["models"]["energy"]
    assert energy["tiles"] == res["stats"]["tiles_done"] and energy["errors"] == 0
    assert energy["latency_ms_p99"] >= energy["latency_ms_p50"] > 0 and energy["tiles_per_s"] > 0
    assert energy["backend"] == "numpy" and energy["tiles_dropped"] == 0
    for (t, p) in received:
        if t == "stats":
            continue
        validate_record(p)
        assert t == ("detection" if p["event"] == "detection" else f"track.{p['event']}")
    # SigMF written by the sink, read back by sigmf-python
    handle = sigmf.sigmffile.fromfile(str(tmp_path / "ann.sigmf-meta"))
    anns = [a for a in handle.get_annotations() if a.get("core:generator") == "gr-rfdetect"]
    dets = [r for r in lines if r["event"] in ("new", "update")]
    assert len(anns) == len(dets)
    key = lambda d: (d["sample_start"], d["sample_count"], round(d["f_low"]), d["track_id"])  # noqa: E731
    assert sorted(key(d) for d in dets) == sorted(
        (a["core:sample_start"], a["core:sample_count"], round(a["core:freq_lower_edge"]), a["rfdetect:track_id"])
        for a in anns)
    starts = [a["core:sample_start"] for a in handle.get_annotations()]
    assert starts == sorted(starts)
    assert handle.read_samples(0, 10).shape == (10,)


def test_the_spectrogram_settings_come_from_the_first_trained_models_card():
    """`rfdetect detect --model classic` runs on the settings classic was trained on
    (floor), the default model on its own (running_floor), energy alone on the defaults;
    an option the user gives replaces its field."""
    import argparse
    from gnuradio.rfdetect.apps.cli import _params
    from gnuradio.rfdetect.dsp.spectrogram import SpectrogramParams
    none = argparse.Namespace(fft_size=None, hop=None, window=None, width=None, pooling=None, normalisation=None)
    assert _params(none, ["classic"]).normalisation == "floor"
    assert _params(none, ["energy", "default"]).normalisation == "running_floor"
    assert _params(none, ["energy"]) == SpectrogramParams()
    given = argparse.Namespace(**{**vars(none), "normalisation": "floor", "hop": 1024})
    p = _params(given, ["default"])
    assert (p.normalisation, p.hop, p.fft_size) == ("floor", 1024, 4096)


def test_spectrogram_options_with_models_of_different_spectrograms_are_one_clear_error(recording, tmp_path):
    """Spectrogram options apply to every model: with `narrowband` (fft 2048 / hop 1024) and
    `default` (4096 / 2048) one of them cannot match, so that is one error naming both models
    and what to do, before any work, and no output. (Without the options the two run
    together, a branch each: tests/test_models.py.)"""
    out = tmp_path / "x.jsonl"
    proc = run_cli("detect", recording, "--model", "narrowband", "--model", "energy", "--model", "default",
                   "--hop", "1024", "--out", out, "--quiet", check=False)
    assert proc.returncode == 2 and proc.stderr.count("error:") == 1, proc.stderr
    assert "models narrowband and default were trained on different spectrogram settings" in proc.stderr
    assert "fft_size: 2048 != 4096" in proc.stderr and "leave them out" in proc.stderr
    assert not out.exists() and not (tmp_path / "x.jsonl.partial").exists()
    # models of one spectrogram still run together with the options
    run_cli("detect", recording, "--model", "narrowband", "--model", "energy", "--hop", "1024", "--out", out,
            "--quiet")
    assert out.exists()


def test_a_carrier_longer_than_many_tiles_is_one_record_from_a_file(tmp_path):
    """`rfdetect detect` plays a file, so NMS Merge holds a signal still going on at a tile's
    end until it ends: a 0.2 s carrier over seven 33 ms tiles is one record (and one SigMF
    annotation), not a piece per tile or two."""
    rng = np.random.default_rng(5)
    n = int(0.2 * RATE)
    x = (0.05 * (rng.standard_normal(n) + 1j * rng.standard_normal(n))
         + 0.5 * np.exp(2j * np.pi * 3e5 * np.arange(n) / RATE)).astype(np.complex64)
    write_recording(tmp_path / "tone", x, new_meta(RATE, "cf32_le", 100e6))
    out = tmp_path / "d.jsonl"
    run_cli("detect", tmp_path / "tone.sigmf-meta", "--model", "energy", "--out", out, "--sigmf-out",
            tmp_path / "ann", "--quiet", *SMALL_ARGS)
    on_tone = [r for r in read_jsonl(out) if r["event"] in ("new", "update") and r["f_low"] < 100.3e6 < r["f_high"]]
    assert len(on_tone) == 1 and on_tone[0]["t_start"] < 0.01 and on_tone[0]["t_stop"] > 0.19, on_tone
    ann = [a for a in json.loads((tmp_path / "ann.sigmf-meta").read_text())["annotations"]
           if a["core:freq_lower_edge"] < 100.3e6 < a["core:freq_upper_edge"]]
    assert len(ann) == 1 and ann[0]["core:sample_count"] > 0.95 * n
