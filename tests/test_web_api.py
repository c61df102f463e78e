"""`rfdetect serve` HTTP API against a real server process on 127.0.0.1 with a real SQLite
file: /detect (tiles and SigMF), IQEngine's plugin API (requests shaped as IQEngine's
client sends them), bad uploads, training jobs that finish, are cancelled, are interrupted
by a restart of the service, and survive it."""
import io
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import BIN, RATE, SMALL, SMALL_ARGS, TILE, run_cli
from gnuradio.rfdetect.apps.synth import synth_dataset
from gnuradio.rfdetect.dsp.spectrogram import spectrogram
from gnuradio.rfdetect.formats.records import from_annotation, match_boxes, read_jsonl
from gnuradio.rfdetect.formats.sigmf_io import SigMFRecording, new_meta, write_archive, write_recording

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

SMALL_Q = {"fft_size": SMALL.fft_size, "hop": SMALL.hop, "width": SMALL.width, **TILE}
START_TIMEOUT_S = 60
JOB_TIMEOUT_S = 150
MAX_UPLOAD_MB = 8  # a 0.3 s test recording is 4.8 MB


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``rfdetect serve`` as a real process; ``start`` waits (with a deadline) until it answers."""

    def __init__(self, data, models=None, zmq=None, log=None, max_upload_mb=MAX_UPLOAD_MB):
        self.data, self.models, self.zmq = Path(data), models, zmq
        self.log = Path(log or Path(data).parent / "serve.log")
        self.max_upload_mb = max_upload_mb
        self.proc = None

    def start(self):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [str(BIN / "rfdetect"), "serve", "--port", str(self.port), "--data", str(self.data),
               "--max-upload-mb", str(self.max_upload_mb), "--log-level", "warning"]
        if self.models:
            cmd += ["--models", str(self.models)]
        if self.zmq:
            cmd += ["--zmq", self.zmq]
        self._logf = open(self.log, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self._logf, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"rfdetect serve exited with {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                if httpx.get(self.url + "/api/status", timeout=2).status_code == 200:
                    self.client = httpx.Client(base_url=self.url, timeout=120)
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise AssertionError(f"rfdetect serve did not answer within {START_TIMEOUT_S} s:\n{self.log.read_text()}")

    def stop(self, kill=False):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._logf.close()

    def wait_job(self, job_id, states, timeout=JOB_TIMEOUT_S, what=None):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            j = self.client.get(f"/api/jobs/{job_id}").json()
            if j["state"] in states and (what is None or what(j)):
                return j
            if j["state"] == "failed" and "failed" not in states:
                raise AssertionError(f"job {job_id} failed: {j['error']}")
            time.sleep(0.3)
        raise AssertionError(f"job {job_id} not {states} within {timeout} s: {j['state']} {j['progress']}")


@pytest.fixture(scope="module")
def web_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("web") / "data"
    synth_dataset(d, n=3, seed=3, sample_rate=RATE, duration=0.3, snr_db=(12.0, 25.0), n_signals=6)
    return d


@pytest.fixture(scope="module")
def server(web_data):
    s = Server(web_data, web_data.parent / "models").start()
    yield s
    s.stop()


def recordings(d):
    return sorted(Path(d).glob("*.sigmf-meta"))


# ------------------------------------------------------------------ /detect
def _tile_with_truth(meta):
    """The 128-row tile of a recording holding the most ground-truth boxes, and those boxes in pixels."""
    rec = SigMFRecording.open(meta)
    rows = spectrogram(rec.read(0, rec.n_samples), SMALL)
    h = TILE["tile_height"]
    best = None
    for r0 in range(0, len(rows) - h, h // 2):
        boxes = []
        for a in rec.annotations:
            b = from_annotation(a, rec.sample_rate)
            y0 = SMALL.sample_to_row(a["core:sample_start"]) - r0
            y1 = SMALL.sample_to_row(a["core:sample_start"] + a["core:sample_count"]) - r0
            if y0 >= 0 and y1 <= h and a["rfdetect:snr_db"] >= 12:
                x0 = SMALL.offset_hz_to_column(b["f_low"] - rec.center_frequency, rec.sample_rate)
                x1 = SMALL.offset_hz_to_column(b["f_high"] - rec.center_frequency, rec.sample_rate)
                boxes.append({"t_start": float(y0), "t_stop": float(y1), "f_low": float(x0), "f_high": float(x1),
                              "label": "signal"})
        if best is None or len(boxes) > len(best[1]):
            best = (rows[r0:r0 + h], boxes)
    return best


def _png(tile, bits=8, fmt="PNG"):
    from PIL import Image
    a = np.clip(tile, 0, 1)
    im = Image.fromarray((a * 65535).round().astype(np.uint16)) if bits == 16 else \
        Image.fromarray((a * 255).round().astype(np.uint8))
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


def _pixel_boxes(dets):
    return [{"t_start": d["bbox"]["y_min"], "t_stop": d["bbox"]["y_max"], "f_low": d["bbox"]["x_min"],
             "f_high": d["bbox"]["x_max"], "label": "signal"} for d in dets]


def test_detect_on_a_tile_finds_its_known_signals(server, web_data):
    tile, truth = _tile_with_truth(recordings(web_data)[0])
    assert len(truth) >= 2
    for bits, fmt in ((8, "PNG"), (16, "PNG"), (8, "JPEG")):
        r = server.client.post("/detect", params={"model": "energy", "fft_size": SMALL.fft_size, "hop": SMALL.hop},
                               files={"image": (f"tile.{fmt.lower()}", _png(tile, bits, fmt), f"image/{fmt.lower()}")})
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == {"detections", "timing_ms"} and body["timing_ms"] > 0  # the seed's shape, no more
        for d in body["detections"]:
            assert set(d) == {"bbox", "confidence", "signal_name"}
            assert set(d["bbox"]) == {"x_min", "y_min", "x_max", "y_max"} and 0 <= d["confidence"] <= 1
            assert d["signal_name"] == "signal"
        matched, _ = match_boxes(truth, _pixel_boxes(body["detections"]), iou=0.3, class_aware=False)
        assert all(m is not None for m in matched), (fmt, bits, truth, body["detections"])
    # the threshold applies: none of the detections is kept above the highest score
    top = max(d["confidence"] for d in body["detections"])
    if top < 1.0:
        r = server.client.post("/detect", params={"model": "energy", "threshold": min(1.0, top + 1e-3)},
                               files={"image": ("t.png", _png(tile), "image/png")})
        assert r.json()["detections"] == []


def test_detect_on_a_tile_with_the_default_model_gives_its_labels(server, web_data):
    """The embedded default model (1024-wide tiles at fft 4096) through the same endpoint: no
    model named is `auto`, which for a tile (no rate, no centre frequency) is the default."""
    from gnuradio.rfdetect.dsp.spectrogram import SpectrogramParams
    rec = SigMFRecording.open(recordings(web_data)[0])
    rows = spectrogram(rec.read(0, rec.n_samples), SpectrogramParams())
    r = server.client.post("/detect", files={"image": ("t.png", _png(rows, 16), "image/png")})
    assert r.status_code == 200, r.text
    labels = json.loads((Path(__file__).parent.parent / "python/rfdetect/models/default/model.card.json")
                        .read_text())["labels"]
    assert {d["signal_name"] for d in r.json()["detections"]} <= set(labels) | {"signal"}
    r = server.client.post("/detect", files={"image": ("t.png", _png(rows[:, :512]), "image/png")})
    assert r.status_code == 400 and "1024 pixels wide" in r.json()["detail"]
    for name in ("pulse", "carrier"):  # plain-dB rows of a grid of their own: a recording, not an image
        r = server.client.post("/detect", params={"model": name}, files={"image": ("t.png", _png(rows), "image/png")})
        assert r.status_code == 400 and "not an image tile" in r.json()["detail"], r.text


def test_sigmf_upload_returns_seconds_and_hz_as_rfdetect_detect(server, web_data, tmp_path):
    meta = recordings(web_data)[1]
    out = tmp_path / "d.jsonl"
    run_cli("detect", meta, "--model", "energy", "--out", out, "--quiet", *SMALL_ARGS)
    want = sorted((r["t_start"], r["t_stop"], r["f_low"], r["f_high"]) for r in read_jsonl(out)
                  if r["event"] in ("new", "update"))
    data = Path(str(meta).replace(".sigmf-meta", ".sigmf-data"))
    write_archive(str(meta).removesuffix(".sigmf-meta"), tmp_path / "rec.sigmf")
    for files in ({"meta": (meta.name, meta.read_bytes()), "data": (data.name, data.read_bytes())},
                  {"archive": ("rec.sigmf", (tmp_path / "rec.sigmf").read_bytes())}):
        r = server.client.post("/detect", params={"model": "energy", **SMALL_Q}, files=files)
        assert r.status_code == 200, r.text
        assert set(r.json()) == {"detections", "timing_ms"}
        dets = r.json()["detections"]
        got = sorted((d["t_start"], d["t_stop"], d["f_low"], d["f_high"]) for d in dets)
        assert got == want and len(got) >= 3
        rec = SigMFRecording.open(meta)
        for d in dets:  # the tile shape plus seconds from the first sample and absolute Hz around 915 MHz
            assert set(d) == {"bbox", "confidence", "signal_name", "t_start", "t_stop", "f_low", "f_high", "models"}
            assert d["models"] == ["energy"], d
            assert 0 <= d["t_start"] < d["t_stop"] <= rec.n_samples / RATE + 1e-9
            assert rec.center_frequency - RATE / 2 <= d["f_low"] < d["f_high"] <= rec.center_frequency + RATE / 2
    # the truth is found in seconds x Hz
    truth = [from_annotation(a, RATE) for a in SigMFRecording.open(meta).annotations if a["rfdetect:snr_db"] >= 12]
    matched, _ = match_boxes(truth, dets, iou=0.3, class_aware=False)
    assert sum(m is not None for m in matched) >= 0.8 * len(truth)


# ------------------------------------------------------------------ IQEngine
def _iqengine_run(client, plugin, raw, md, params):
    """As IQEngine's client does it (client/src/api/plugin/run.tsx): FormData with iq_file (a File
    named after the data file, type iq/cf32_le), metadata_file and custom_params as JSON strings;
    then status polled until progress is 100, then the result."""
    r = client.post(f"/plugins/{plugin}", files={"iq_file": (md["file_name"], raw, md["data_type"])},
                    data={"metadata_file": json.dumps(md), "custom_params": json.dumps(params)})
    assert r.status_code == 200, r.text
    st = r.json()
    assert set(st) >= {"job_id", "function_name", "file_name", "progress"} and st["function_name"] == plugin
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        st = client.get(f"/plugins/{st['job_id']}/status").json()
        if st["progress"] == 100:
            break
        time.sleep(0.2)
    assert st["progress"] == 100 and not st.get("error"), st
    res = client.get(f"/plugins/{st['job_id']}/result")
    assert res.status_code == 200, res.text
    assert res.json()["job_status"]["job_id"] == st["job_id"]
    return res.json()["annotations"]


@pytest.mark.parametrize("datatype", ["cf32_le", "ci16_le"])
def test_iqengine_plugin_flow_returns_what_rfdetect_detect_gives(server, web_data, tmp_path, datatype):
    listed = server.client.get("/plugins/").json()  # IQEngine asks with the trailing slash
    assert listed == server.client.get("/plugins").json() and {"default", "energy"} <= set(listed)
    defs = server.client.get("/plugins/energy").json()
    assert defs["threshold"]["type"] == "number" and all({"title", "type", "default"} <= set(v) for v in defs.values())
    src = SigMFRecording.open(recordings(web_data)[2])
    base = tmp_path / f"rec_{datatype}"
    meta = new_meta(RATE, datatype, src.center_frequency)
    write_recording(base, src.read(0, src.n_samples), meta)
    run_cli("detect", f"{base}.sigmf-meta", "--model", "energy", "--sigmf-out", tmp_path / "out", "--out",
            tmp_path / "d.jsonl", "--quiet", *SMALL_ARGS)
    want = [a for a in json.loads((tmp_path / "out.sigmf-meta").read_text())["annotations"]
            if a.get("core:generator") == "gr-rfdetect"]
    assert len(want) >= 3
    md = {"file_name": f"rec_{datatype}.sigmf-data", "sample_rate": RATE, "center_freq": src.center_frequency,
          "data_type": f"iq/{datatype}"}
    got = _iqengine_run(server.client, "energy", Path(f"{base}.sigmf-data").read_bytes(), md, SMALL_Q)
    assert got == want
    for a in got:
        assert {"core:sample_start", "core:sample_count", "core:freq_lower_edge", "core:freq_upper_edge",
                "core:label", "rfdetect:score", "rfdetect:model"} <= set(a)


def test_iqengine_plugin_auto_runs_the_model_made_for_the_capture(server, tmp_path):
    """The `auto` plugin (no custom parameters) on IQ at 2 MS/s centred on 450 MHz runs
    `narrowband`, `narrowband-x2`, `wideband-short`, `pulse` and `carrier`, as `rfdetect detect`
    with no --model does, and gives their annotations."""
    assert server.client.get("/plugins/auto").json() == {}
    [meta] = synth_dataset(tmp_path / "vhf", n=1, seed=4406, sample_rate=2e6, duration=0.25, snr_db=(12.0, 25.0),
                           n_signals=4, profile="vhf-uhf", classes=["tdma"], center_freq=450e6)
    run_cli("detect", meta, "--model", "narrowband", "--model", "narrowband-x2", "--model", "wideband-short",
            "--model", "pulse", "--model", "carrier", "--sigmf-out", tmp_path / "out", "--out", tmp_path / "d.jsonl",
            "--quiet")
    want = [a for a in json.loads((tmp_path / "out.sigmf-meta").read_text())["annotations"]
            if a.get("core:generator") == "gr-rfdetect"]
    assert {"anchor_free-narrowband", "anchor_free-narrowband-x2"} <= {a["rfdetect:model"] for a in want} <= {
        "anchor_free-narrowband", "anchor_free-narrowband-x2", "anchor_free-wideband-short", "pulse", "carrier"}
    md = {"file_name": "vhf.sigmf-data", "sample_rate": 2e6, "center_freq": 450e6, "data_type": "iq/cf32_le"}
    got = _iqengine_run(server.client, "auto", Path(str(meta).replace(".sigmf-meta", ".sigmf-data")).read_bytes(),
                        md, {})
    assert got == want and got


def test_models_joined_by_plus_run_together_as_rfdetect_detect_does(server, tmp_path):
    """`/detect?model=auto+pulse` on 40 ms of radar at 20 MS/s (2.8 GHz: `auto` is wideband,
    narrowband-zoom and wideband-short) gives what `rfdetect detect --model auto --model pulse` gives, pulses included; the
    `pulse` detector is offered by name, and a tile cannot take two models."""
    assert "pulse" in server.client.get("/plugins").json()
    assert server.client.get("/plugins/auto+pulse").json() == {}  # auto's settings: the card it picks
    assert server.client.get("/plugins/pulse").json()["fft_size"]["default"] == 32
    [meta] = synth_dataset(tmp_path / "radar", n=1, seed=4482, sample_rate=20e6, duration=0.04,
                           snr_db=(18.0, 25.0), n_signals=2, profile="mixed", classes=["radar"], center_freq=2.8e9)
    out = tmp_path / "d.jsonl"
    run_cli("detect", meta, "--model", "auto", "--model", "pulse", "--out", out, "--quiet")
    want = sorted((r["t_start"], r["t_stop"], r["f_low"], r["f_high"], r["label"]) for r in read_jsonl(out)
                  if r["event"] in ("new", "update"))
    data = Path(str(meta).replace(".sigmf-meta", ".sigmf-data"))
    r = server.client.post("/detect", params={"model": "auto+pulse"},
                           files={"meta": (meta.name, meta.read_bytes()), "data": (data.name, data.read_bytes())})
    assert r.status_code == 200, r.text
    got = sorted((d["t_start"], d["t_stop"], d["f_low"], d["f_high"], d["signal_name"]) for d in r.json()["detections"])
    assert got == want
    assert sum(g[-1] == "pulse" for g in got) >= 20  # 44 pulses in the recording
    # a model auto stands for, named as well, runs once
    r = server.client.post("/detect", params={"model": "auto+narrowband-zoom"},
                           files={"meta": (meta.name, meta.read_bytes()), "data": (data.name, data.read_bytes())})
    assert r.status_code == 200, r.text
    tile = {"image": ("t.png", _png(np.zeros((64, 512))), "image/png")}
    r = server.client.post("/detect", params={"model": "default+pulse"}, files=tile)
    assert r.status_code == 400 and "a tile takes one model" in r.json()["detail"]
    r = server.client.post("/detect", params={"model": "pulse+pulse"}, files=tile)
    assert r.status_code == 400 and "named twice" in r.json()["detail"]
    r = server.client.get("/plugins/pulse+pulse")
    assert r.status_code == 400 and "named twice" in r.json()["detail"]
    r = server.client.post("/detect", params={"model": "auto+nope"}, files=tile)
    assert r.status_code == 404 and "nope" in r.json()["detail"]


def test_auto_with_spectrogram_settings_is_one_model_as_in_rfdetect_detect(server, tmp_path):
    """`/detect?model=auto` on TDMA and LoRa at 20 MS/s runs wideband with narrowband-zoom (and
    wideband-short) beside it (the zoom boxes bursts wideband cannot see); given `hop`, it runs
    wideband alone, as `rfdetect detect --hop` does, and gives the same records."""
    from gnuradio.rfdetect.apps.synth import ARTEFACTS
    [meta] = synth_dataset(tmp_path / "tdma", n=1, seed=4439, sample_rate=20e6, duration=0.045, snr_db=(15.0, 25.0),
                           n_signals=8, profile="vhf-uhf", classes=["tdma", "lora"], center_freq=450e6,
                           artefacts=[a for a in ARTEFACTS if a != "drift"])
    data = Path(str(meta).replace(".sigmf-meta", ".sigmf-data"))
    files = {"meta": (meta.name, meta.read_bytes()), "data": (data.name, data.read_bytes())}
    r = server.client.post("/detect", params={"model": "auto"}, files=files)
    assert r.status_code == 200, r.text
    assert any("anchor_free-narrowband-zoom" in d["models"] for d in r.json()["detections"]), r.json()
    r = server.client.post("/detect", params={"model": "auto", "hop": 1024}, files=files)
    assert r.status_code == 200, r.text
    got = r.json()["detections"]
    assert got and not any("anchor_free-narrowband-zoom" in d["models"] for d in got)
    out = tmp_path / "d.jsonl"
    run_cli("detect", meta, "--hop", "1024", "--out", out, "--quiet")
    want = sorted((r["t_start"], r["t_stop"], r["f_low"], r["f_high"]) for r in read_jsonl(out)
                  if r["event"] in ("new", "update"))
    assert sorted((d["t_start"], d["t_stop"], d["f_low"], d["f_high"]) for d in got) == want


def test_bad_requests_get_one_clear_error(server, web_data):
    c = server.client
    r = c.post("/detect", files={"image": ("x.png", b"\x89PNG not really", "image/png")})
    assert r.status_code == 400 and "not a PNG or JPEG" in r.json()["detail"]
    r = c.post("/detect", files={"image": ("x.png", b"", "image/png")})
    assert r.status_code == 400 and "empty" in r.json()["detail"]
    meta = recordings(web_data)[0]
    r = c.post("/detect", files={"meta": (meta.name, meta.read_bytes())})
    assert r.status_code == 400 and "'data'" in r.json()["detail"]
    r = c.post("/detect", files={"meta": ("m", b"{not json"), "data": ("d", b"\0" * 800)})
    assert r.status_code == 400 and "meta: not JSON" in r.json()["detail"]
    r = c.post("/detect", files={"archive": ("a.sigmf", b"not a tar")})
    assert r.status_code == 400 and "archive" in r.json()["detail"]
    r = c.post("/detect")
    assert r.status_code == 400 and "no upload" in r.json()["detail"]
    # a parameter out of range: 400 naming it, one message (not FastAPI's 422 list)
    r = c.post("/detect", params={"threshold": 2}, files={"image": ("t.png", _png(np.zeros((64, 512))), "image/png")})
    assert r.status_code == 400 and r.json()["detail"].startswith("threshold: ")
    r = c.post("/api/jobs", json={"recordings": [meta.name], "epochs": "many"})
    assert r.status_code == 400 and r.json()["detail"].startswith("epochs: ")
    big = b"\0" * int((MAX_UPLOAD_MB + 1) * 2**20)
    r = c.post("/detect", files={"image": ("big.png", big, "image/png")})
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    r = c.post("/plugins/energy", files={"iq_file": ("x", big, "iq/cf32_le")},
               data={"metadata_file": "{}", "custom_params": "{}"})
    assert r.status_code == 413
    r = c.post("/detect", params={"model": "nope"}, files={"image": ("t.png", _png(np.zeros((64, 512))), "image/png")})
    assert r.status_code == 404 and "nope" in r.json()["detail"]
    assert c.get("/plugins/nope").status_code == 404
    md = {"file_name": "x", "sample_rate": RATE, "center_freq": 915e6, "data_type": "iq/cf32_le"}
    r = c.post("/plugins/energy", files={"iq_file": ("x", b"\0" * 12, "iq/cf32_le")},
               data={"metadata_file": json.dumps(md), "custom_params": "{}"})
    assert r.status_code == 400 and "whole number" in r.json()["detail"]
    r = c.post("/plugins/energy", files={"iq_file": ("x", b"\0" * 16, "iq/cf32_le")},
               data={"metadata_file": json.dumps({**md, "data_type": "iq/cf64_xx"}), "custom_params": "{}"})
    assert r.status_code == 400 and "data_type" in r.json()["detail"]
    r = c.post("/plugins/energy", files={"iq_file": ("x", b"\0" * 16, "iq/cf32_le")},
               data={"metadata_file": json.dumps({"file_name": "x"}), "custom_params": "{}"})
    assert r.status_code == 400 and "sample_rate" in r.json()["detail"]
    assert c.get("/plugins/0000/status").status_code == 404
    assert c.get("/api/jobs/999").status_code == 404
    r = c.post("/api/jobs", json={"recordings": ["../etc/passwd"]})
    assert r.status_code == 404
    r = c.post("/api/jobs", json={"recordings": [meta.name], "fft_size": 1000})
    assert r.status_code == 400 and "power of two" in r.json()["detail"]
    # a broken recording under --data: 400 naming it wherever it is used
    broken = web_data / "broken" / "nodata.sigmf-meta"  # a subfolder: the other tests' globs miss it
    broken.parent.mkdir(exist_ok=True)
    broken.write_text(json.dumps(new_meta(RATE, "cf32_le", 915e6)))
    try:
        for r in (c.post("/api/train/estimate", json={"recordings": ["broken/nodata.sigmf-meta"]}),
                  c.post("/api/jobs", json={"recordings": ["broken/nodata.sigmf-meta"]}),
                  c.get("/api/recordings/preview", params={"path": "broken/nodata.sigmf-meta"}),
                  c.post("/api/recordings/detect", json={"path": "broken/nodata.sigmf-meta", "model": "energy"})):
            assert r.status_code == 400 and "nodata.sigmf-meta" in r.json()["detail"], r.text
    finally:
        broken.unlink()
    assert not list((web_data / ".rfdetect-web" / "scratch").iterdir())  # nothing half-written left


def test_openapi_documents_every_endpoint(server):
    spec = server.client.get("/openapi.json").json()
    routes = {(m, p) for p, ops in spec["paths"].items() for m in ops}
    assert {("post", "/detect"), ("get", "/plugins"), ("get", "/plugins/{name}"), ("post", "/plugins/{name}"),
            ("get", "/plugins/{job_id}/status"), ("get", "/plugins/{job_id}/result"), ("post", "/api/jobs"),
            ("post", "/api/jobs/{job_id}/export"), ("get", "/api/jobs/{job_id}/events")} <= routes
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            where = f"{method.upper()} {path}"
            assert op.get("summary") and op.get("description"), where
            assert "422" not in op["responses"], where  # validation errors are answered 400
            ok = {c: r for c, r in op["responses"].items() if c.startswith("2")}
            assert len(ok) == 1, where
            content = next(iter(ok.values())).get("content") or {}
            assert content, where
            for media, c in content.items():  # JSON has a model; images, zips and event streams say so
                assert c.get("schema") if media == "application/json" else media != "application/json", where
            for code, r in op["responses"].items():
                if code.startswith("4"):
                    assert r["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse"), where
    detect = spec["paths"]["/detect"]["post"]
    assert {"400", "404", "413"} <= set(detect["responses"])
    schemas = spec["components"]["schemas"]
    assert set(schemas["DetectResponse"]["properties"]) == {"detections", "timing_ms"}
    assert set(schemas["Detection"]["properties"]) == {"bbox", "confidence", "signal_name", "t_start", "t_stop",
                                                       "f_low", "f_high", "models"}
    assert {"core:sample_start", "core:sample_count", "core:freq_lower_edge", "core:freq_upper_edge",
            "core:label"} <= set(schemas["SigMFAnnotation"]["properties"])


def test_nothing_is_fetched_from_the_internet(server):
    """Air-gapped networks: no page or script names another host (FastAPI's own /docs fetches
    Swagger UI from a CDN: ours is a local page)."""
    import re
    static = Path(__file__).parent.parent / "python/rfdetect/apps/web/static"
    urls = ["/training", "/training/jobs/1", "/live", "/recordings", "/docs", "/redoc"]
    urls += [f"/static/{f.name}" for f in sorted(static.iterdir())]
    assert len(urls) > 8
    for url in urls:
        r = server.client.get(url)
        if url == "/redoc":
            assert r.status_code == 404  # FastAPI's ReDoc page would fetch its script from a CDN
            continue
        assert r.status_code == 200, url
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", r.text, re.I), (url, re.findall(
            r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}[^\s\"']*", r.text, re.I))
        for ref in re.findall(r"""(?:src|href)=["']([^"'$]+)["']""", r.text):
            assert ref.startswith("/") and not ref.startswith("//"), (url, ref)


# ------------------------------------------------------------------ training jobs
def _job(c, recs, **kw):
    body = {"recordings": [r.name for r in recs], "arch": "two_stage", "threads": 1, "k_folds": 0, **SMALL_Q, **kw}
    r = c.post("/api/jobs", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is not running
        return f.read().split(")")[-1].split()[0] != "Z"


def test_a_second_service_on_the_same_data_folder_is_refused(server, web_data):
    proc = run_cli("serve", "--data", web_data, "--port", str(free_port()), check=False, timeout=60)
    assert proc.returncode == 2 and "another rfdetect serve uses" in proc.stderr


def test_a_worker_that_ignores_sigterm_is_killed_after_the_grace(web_data, tmp_path):
    """Cancel has a deadline: a worker that SIGTERM does not end (a training stuck in native
    code) is killed stop_grace_s later, and the job is recorded as cancelled. One job per
    device: "cuda" and "cuda:0" are the same GPU, so the second waits for the first."""
    from gnuradio.rfdetect.apps.web.jobs import TUNED, JobRunner, JobStore

    class StubbornRunner(JobRunner):
        def _command(self, job):  # a real process, one that ignores SIGTERM as its children do
            return ["bash", "-c", "trap '' TERM; while true; do sleep 0.1; done"]

    store = JobStore(tmp_path / "jobs.sqlite")
    runner = StubbornRunner(store, tmp_path, None, poll_s=0.1, stop_grace_s=1.0)
    params = {"arch": "two_stage", "device": "cuda", **SMALL_Q, **{k: None for k in TUNED}}
    job_id = runner.create("stubborn", recordings(web_data)[:1], params)
    second = runner.create("same GPU", recordings(web_data)[:1], {**params, "device": "cuda:0"})
    runner.start()
    try:
        deadline = time.monotonic() + 20
        while store.get(job_id)["state"] != "running" and time.monotonic() < deadline:
            time.sleep(0.05)
        pid = store.get(job_id)["pid"]
        assert store.get(job_id)["state"] == "running" and _alive(pid)
        time.sleep(0.5)  # a few scheduling rounds
        assert store.get(second)["state"] == "queued"
        t0 = time.monotonic()
        runner.cancel(job_id)
        time.sleep(0.5)
        assert _alive(pid), "SIGTERM is ignored: the worker is still there within the grace"
        while store.get(job_id)["state"] != "cancelled" and time.monotonic() < t0 + 10:
            time.sleep(0.05)
        assert store.get(job_id)["state"] == "cancelled", store.get(job_id)
        assert 1.0 <= time.monotonic() - t0 < 10 and not _alive(pid)
        while store.get(second)["state"] != "running" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert store.get(second)["state"] == "running"  # the GPU is free: the queued job starts
        runner.cancel(second)
    finally:
        runner.stop()


def test_training_jobs_finish_cancel_interrupt_and_survive_restarts(web_data, tmp_path):
    import shutil
    data = tmp_path / "data"  # its own folder: one service per data folder
    data.mkdir()
    for f in web_data.glob("*.sigmf-*"):
        shutil.copy(f, data / f.name)
    web_data = data
    srv = Server(web_data, tmp_path / "models", log=tmp_path / "serve.log").start()
    try:
        c = srv.client
        recs = recordings(web_data)
        est = c.post("/api/train/estimate", json={"recordings": [r.name for r in recs], **SMALL_Q,
                                                  "epochs": 3}).json()
        assert est["labelled_tiles"] > 0 and est["values"]["epochs"] == 3 and est["auto"]["epochs"] == 100
        assert est["estimated_s"] > 0
        a = _job(c, recs[:2], epochs=2, name="tiny", arch="anchor_free")  # its card has a label rule
        b = _job(c, recs[:2], epochs=400, early_stop=1000, name="long")
        assert c.get(f"/api/jobs/{b['id']}").json()["state"] == "queued"  # one at a time on the cpu
        a = srv.wait_job(a["id"], ("done",))
        assert [m["epoch"] for m in a["metrics"]] == [1, 2]
        for m in a["metrics"]:  # losses and the validation metrics the job page draws, every epoch
            assert m["train_loss"] > 0 and m["val_loss"] > 0, m
            for k in ("val_ap50", "val_map50", "val_precision", "val_recall", "val_f1"):
                assert 0.0 <= m[k] <= 1.0, (k, m)
        assert a["report"]["pixel"]["AP50"] is not None and a["progress"]["percent"] == 100
        # the event stream of a finished job: its metrics, its state, the end
        with c.stream("GET", f"/api/jobs/{a['id']}/events") as s:
            text = "".join(s.iter_text())
        assert "event: metrics" in text and "event: end" in text and '"done"' in text
        # b runs once a is done; cancelled mid-run
        b = srv.wait_job(b["id"], ("running",), what=lambda j: len(j["metrics"]) >= 1)
        pid = b["pid"]
        assert c.post(f"/api/jobs/{b['id']}/cancel").status_code == 200
        b = srv.wait_job(b["id"], ("cancelled",), timeout=30)
        assert 1 <= len(b["metrics"]) < 400 and not _alive(pid)
        assert [h["state"] for h in b["history"]] == ["queued", "running", "cancelled"]
        # export (validated against PyTorch), download, copy into --models: a new plugin. The
        # run's label rule as its card has it now (a run with --class-confidence auto chose it)
        from gnuradio.rfdetect.apps.web.jobs import WEB_DIR
        run_card = web_data / WEB_DIR / "jobs" / str(a["id"]) / "model" / "model.card.json"
        card = json.loads(run_card.read_text())
        assert card["label_rule"]["class_confidence"] != 0.35
        card["label_rule"]["class_confidence"] = 0.35
        run_card.write_text(json.dumps(card))
        ex = c.post(f"/api/jobs/{a['id']}/export")
        assert ex.status_code == 200, ex.text
        assert ex.json()["onnx_check"]["max_excess_error"] <= ex.json()["onnx_check"]["atol"]
        z = c.get(f"/api/jobs/{a['id']}/download")
        assert z.status_code == 200 and z.content[:2] == b"PK"
        import zipfile
        names = zipfile.ZipFile(io.BytesIO(z.content)).namelist()
        assert f"job{a['id']}/model.onnx" in names and f"job{a['id']}/model.card.json" in names
        exported = json.loads(zipfile.ZipFile(io.BytesIO(z.content)).read(f"job{a['id']}/model.card.json"))
        assert exported["label_rule"]["class_confidence"] == 0.35
        assert c.post(f"/api/jobs/{a['id']}/install", json={"name": "tiny1"}).status_code == 200
        assert c.post(f"/api/jobs/{a['id']}/install", json={"name": "tiny1"}).status_code == 409
        assert "tiny1" in c.get("/plugins").json()
        assert c.get("/plugins/tiny1").json()["tile_height"]["default"] == TILE["tile_height"]
        assert c.post(f"/api/jobs/{b['id']}/export").status_code == 409
        # c is interrupted: the service dies (SIGKILL) while it trains
        j3 = _job(c, recs[:2], epochs=400, early_stop=1000, name="interrupted")
        j3 = srv.wait_job(j3["id"], ("running",), what=lambda j: len(j["metrics"]) >= 1)
        srv.stop(kill=True)
        deadline = time.monotonic() + 10
        while _alive(j3["pid"]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(j3["pid"]), "the worker outlived the service"
        srv.start()
        c = srv.client
        jobs = {j["id"]: j for j in c.get("/api/jobs").json()}
        assert jobs[a["id"]]["state"] == "done" and jobs[b["id"]]["state"] == "cancelled"
        assert jobs[j3["id"]]["state"] == "interrupted"
        assert len(c.get(f"/api/jobs/{a['id']}").json()["metrics"]) == 2
        epochs_before = len(c.get(f"/api/jobs/{j3['id']}").json()["metrics"])
        # resume from the checkpoint: the epochs go on from where they stopped
        assert c.post(f"/api/jobs/{j3['id']}/resume").status_code == 200
        j3 = srv.wait_job(j3["id"], ("running",), what=lambda j: len(j["metrics"]) > epochs_before + 1)
        eps = [m["epoch"] for m in j3["metrics"]]
        assert eps == sorted(set(eps)) and eps[0] == 1
        log = (web_data / ".rfdetect-web" / "jobs" / str(j3["id"]) / "log.txt").read_text()
        assert "resumed from" in log
        assert c.post(f"/api/jobs/{j3['id']}/pause").status_code == 200
        srv.wait_job(j3["id"], ("paused",), timeout=30)
        assert c.delete(f"/api/jobs/{j3['id']}").status_code == 200
        assert c.get(f"/api/jobs/{j3['id']}").status_code == 404
        # a plain restart loses nothing either
        srv.stop()
        srv.start()
        jobs = {j["id"]: j for j in srv.client.get("/api/jobs").json()}
        assert jobs[a["id"]]["state"] == "done" and jobs[b["id"]]["state"] == "cancelled" and j3["id"] not in jobs
        cmp = srv.client.get("/api/jobs/compare", params={"ids": f"{a['id']},{b['id']}"}).json()
        assert [x["id"] for x in cmp] == [a["id"], b["id"]] and cmp[0]["pixel_AP50"] is not None
        assert cmp[0]["val_f1"] == jobs[a["id"]]["progress"]["last"]["val_f1"]
    finally:
        srv.stop()
