"""Inference runtime: model manager (format priority, engine rebuild), hardware
profiles and their overrides, per-model options, frequency-split batching,
concurrent models and their statistics."""
import logging
import os
import shutil
import time

import numpy as np
import pytest

from gnuradio.rfdetect.gpu import BackendError
from gnuradio.rfdetect.inference.backends import OnnxBackend
from gnuradio.rfdetect.inference.energy_detector import PixelBox
from gnuradio.rfdetect.inference.hardware_profile import (PROFILES, ProfileError, detect_profile, env_score_threshold,
                                                resolve_profile)
from gnuradio.rfdetect.inference.model_runtime import (ModelError, ModelSpec, card_for, load_model, model_candidates,
                                             onnx_beside, open_engine)
from gnuradio.rfdetect.inference.tensorrt_backend import TensorRTUnavailable
from gnuradio.rfdetect.inference.tile_detector import TileDetector

from conftest import SMALL, SMALL_ARGS, TILE, run_cli
from onnx_grid_model import make_grid_model

CPU = PROFILES["cpu"]
H = TILE["tile_height"]


@pytest.fixture
def model_dir(tmp_path):
    """A folder as export leaves it on a machine with TensorRT: model.engine (here: bytes
    no TensorRT would load), model.onnx, model.card.json."""
    d = tmp_path / "grid"
    d.mkdir()
    make_grid_model(d / "model.onnx", SMALL, H)
    (d / "model.engine").write_bytes(b"not an engine for this GPU")
    return d


def _tile_with_burst(x0=300, x1=340, y0=40, y1=80):
    tile = np.full((H, SMALL.width), 0.1, np.float32)
    tile[y0:y1, x0:x1] = 0.9
    return tile


# ---------------------------------------------------------------- model manager
def test_format_priority_engine_then_onnx_then_pt(model_dir):
    (model_dir / "model.pt").write_bytes(b"")
    names = [p.name for p in model_candidates(str(model_dir))]
    assert names == ["model.engine", "model.onnx", "model.pt"]
    assert [p.name for p in model_candidates(str(model_dir), ("onnxruntime", "pytorch"))] == ["model.onnx", "model.pt"]
    assert [p.name for p in model_candidates(str(model_dir), ("pytorch",))] == ["model.pt"]


def test_engine_that_cannot_load_here_falls_back_to_onnx_and_says_why(model_dir, caplog):
    caplog.set_level(logging.WARNING, "rfdetect.models")
    m = load_model(str(model_dir), SMALL, H, profile=PROFILES["desktop-gpu"])
    assert m.backend.kind == "onnxruntime" and m.backend.path.name == "model.onnx"
    assert "skipped model.engine" in caplog.text and "TensorRT is not installed" in caplog.text
    boxes = m.detect(_tile_with_burst())
    assert boxes and boxes[0].label == "burst" and 300 <= boxes[0].x0 < 340


def test_a_model_that_runs_another_models_network_ships_only_its_card(model_dir, tmp_path):
    """A folder with a card whose ``derived_from`` names a model folder beside it, and no model
    file of its own, runs that folder's network under its own card (the embedded zoom, x2 and
    short models: one copy of each network in the package). A base that is not there, or is
    itself such a folder, is one clear error; a model file of its own wins."""
    import json
    card = json.loads((model_dir / "model.card.json").read_text())
    d = tmp_path / "grid-strict"
    d.mkdir()
    (d / "model.card.json").write_text(json.dumps(dict(card, thresholds=dict(card["thresholds"], score=0.95),
                                                        derived_from={"model": "grid", "changed": ["thresholds.score"]})))
    m = load_model(str(d), SMALL, H, profile=CPU)
    assert m.backend.path == model_dir / "model.onnx" and m.score_threshold == 0.95
    assert load_model(str(model_dir), SMALL, H, profile=CPU).score_threshold != 0.95
    assert model_candidates(str(d), ("onnxruntime",)) == [model_dir / "model.onnx"]
    for base in ("missing", "grid-strict"):
        bad = tmp_path / f"bad-{base}"
        bad.mkdir()
        (bad / "model.card.json").write_text(json.dumps(dict(card, derived_from={"model": base})))
        with pytest.raises(ModelError, match=rf"runs the network of '{base}' \(derived_from\)"):
            load_model(str(bad), SMALL, H, profile=CPU)
    shutil.copy(model_dir / "model.onnx", d / "model.onnx")
    assert model_candidates(str(d), ("onnxruntime",)) == [d / "model.onnx"]


def test_model_names_resolve_in_rfdetect_model_dir(model_dir, monkeypatch):
    monkeypatch.setenv("RFDETECT_MODEL_DIR", str(model_dir.parent))
    m = load_model("grid", SMALL, H, profile=CPU)
    assert m.backend.path == model_dir / "model.onnx"
    with pytest.raises(ModelError, match=r"not found: 'nothere' \(nor in RFDETECT_MODEL_DIR"):
        load_model("nothere", SMALL, H, profile=CPU)


def test_a_folder_without_a_model_for_the_allowed_backends_is_refused(model_dir):
    with pytest.raises(ModelError, match=r"holds no model for backends \['pytorch'\].*'.engine', '.onnx'"):
        load_model(f"{model_dir}?backend=pytorch", SMALL, H, profile=CPU)


def test_corrupt_pt_model_gets_one_clear_error(model_dir):
    (model_dir / "model.pt").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ModelError, match="cannot load PyTorch model .*model.pt"):
        load_model(str(model_dir / "model.pt"), SMALL, H, profile=CPU)


def test_rebuilt_engine_shares_the_onnx_models_card(tmp_path):
    e = tmp_path / "model.nvidia-h100-80gb-hbm3-sm90-trt10.3.0.fp16.engine"
    assert card_for(e) == tmp_path / "model.card.json" and onnx_beside(e) == tmp_path / "model.onnx"
    assert card_for(tmp_path / "my.model.onnx") == tmp_path / "my.model.card.json"


class _FakeEngines:
    """Stands in for TensorRT, which cannot be installed here: engines that 'load'
    only when built for this GPU, to drive the rebuild logic."""

    def __init__(self, here):
        self.here = here
        self.builds = []

    def load(self, path, device, precision):
        if path.read_bytes() != self.here:
            raise BackendError(f"cannot deserialise {path.name} on this GPU")
        return ("engine", path.name)

    def build(self, onnx, out):
        self.builds.append((onnx.name, out.name))
        out.write_bytes(self.here)

    def cache_path(self, onnx):
        return onnx.with_name("model.gpu-a-sm87-trt10.3.0.fp16.engine")


def test_engine_from_another_gpu_is_rebuilt_once_from_the_onnx_beside_it(model_dir, caplog):
    caplog.set_level(logging.WARNING, "rfdetect.models")
    fake = _FakeEngines(b"engine for gpu-a")
    engine = model_dir / "model.engine"
    got = open_engine(engine, "cuda:0", "fp16", fake.load, fake.build, fake.cache_path)
    assert got == ("engine", "model.gpu-a-sm87-trt10.3.0.fp16.engine")
    assert fake.builds == [("model.onnx", "model.gpu-a-sm87-trt10.3.0.fp16.engine")]
    assert "does not load here" in caplog.text and "rebuilding from" in caplog.text
    caplog.clear()
    again = open_engine(engine, "cuda:0", "fp16", fake.load, fake.build, fake.cache_path)
    assert again == got and len(fake.builds) == 1  # the cached engine is used, not rebuilt
    assert "built earlier for this GPU" in caplog.text
    (model_dir / "model.onnx").unlink()
    (model_dir / "model.gpu-a-sm87-trt10.3.0.fp16.engine").unlink()
    with pytest.raises(ModelError, match="no model.onnx beside it to rebuild"):
        open_engine(engine, "cuda:0", "fp16", fake.load, fake.build, fake.cache_path)


def test_tensorrt_path_imports_and_fails_clearly_without_tensorrt(model_dir, recording, tmp_path):
    """No TensorRT here: the backend and the builder raise one clear error; `detect` on a
    real recording with the engine and only the tensorrt backend allowed fails with that
    reason, and with ONNX Runtime allowed as well it runs on the ONNX beside the engine."""
    from gnuradio.rfdetect.inference.tensorrt_backend import TensorRTBackend, build_engine
    with pytest.raises(TensorRTUnavailable, match="TensorRT is not installed"):
        TensorRTBackend(model_dir / "model.engine")
    with pytest.raises(TensorRTUnavailable, match="TensorRT is not installed"):
        build_engine(model_dir / "model.onnx")
    engine = model_dir / "model.engine"
    args = ["detect", recording, "--quiet", "--profile", "desktop-gpu", "--out", tmp_path / "d.jsonl", *SMALL_ARGS]
    only = run_cli(*args, "--model", f"{engine}?backend=tensorrt", check=False)
    assert only.returncode != 0
    assert "no format loads here (model.engine: TensorRT is not installed here" in only.stderr, only.stderr
    assert "Traceback" not in only.stderr
    fallback = run_cli(*args, "--model", engine, check=False)
    assert fallback.returncode == 0, fallback.stderr
    assert "using model.onnx (onnxruntime); skipped model.engine: TensorRT is not installed" in fallback.stderr


# ---------------------------------------------------------------- profiles
@pytest.mark.parametrize("files,expected", [
    ({"etc/nv_tegra_release": "# R36 (release)"}, "jetson"),
    ({"proc/device-tree/model": "NVIDIA Jetson Orin Nano Developer Kit\0"}, "jetson"),
    ({"proc/driver/nvidia/gpus/0000:01:00.0/information": "Model: NVIDIA H100"}, "desktop-gpu"),
    ({"proc/device-tree/model": "Raspberry Pi 5\0"}, "cpu"),
    ({}, "cpu"),
])
def test_profile_detection(tmp_path, files, expected):
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    assert detect_profile(str(tmp_path)) == expected


def test_profile_overrides_parameter_beats_environment_beats_profile(tmp_path):
    env = {"RFDETECT_PROFILE": "jetson", "RFDETECT_DEVICE": "1", "RFDETECT_PRECISION": "fp32",
           "RFDETECT_BATCH": "8"}
    p = resolve_profile(env=env, root=str(tmp_path))
    assert (p.name, p.device, p.precision, p.batch_size, p.backends[0]) == ("jetson", "cuda:1", "fp32", 8, "tensorrt")
    p = resolve_profile("cpu", backend="pytorch", device="auto", precision="", env=env, root=str(tmp_path))
    assert (p.name, p.backends, p.device, p.precision) == ("cpu", ("pytorch",), "cuda:1", "fp32")
    p = resolve_profile(env={}, root=str(tmp_path))
    assert p == PROFILES["cpu"]
    for bad, msg in [({"RFDETECT_PROFILE": "tpu"}, "profile 'tpu'"), ({"RFDETECT_DEVICE": "gpu0"}, "device 'gpu0'"),
                     ({"RFDETECT_PRECISION": "int4"}, "precision 'int4'"), ({"RFDETECT_BATCH": "many"}, "RFDETECT_BATCH"),
                     ({"RFDETECT_BACKEND": "tflite"}, "backend 'tflite'"),
                     ({"RFDETECT_THREADS": "two"}, "RFDETECT_THREADS"), ({"RFDETECT_THREADS": "-1"}, "threads -1")]:
        with pytest.raises(ProfileError, match=msg):
            resolve_profile(env=bad, root=str(tmp_path))
    assert env_score_threshold({"RFDETECT_SCORE_THRESHOLD": "0.7"}) == 0.7
    with pytest.raises(ProfileError, match="must be in"):
        env_score_threshold({"RFDETECT_SCORE_THRESHOLD": "7"})


def test_cpu_threads_per_model_come_from_the_profile_into_the_onnx_session(model_dir, tmp_path):
    """Every core in the cpu profile, one on GPU profiles, unless RFDETECT_THREADS (or the
    threads parameter) says otherwise (0: every core). The number reaches ONNX Runtime."""
    from gnuradio.rfdetect.inference.model_runtime import open_backend
    cores = len(os.sched_getaffinity(0))
    assert resolve_profile(env={}, root=str(tmp_path)).cpu_threads == cores  # the cpu profile: every core
    assert resolve_profile("jetson", env={}, root=str(tmp_path)).cpu_threads == 1
    assert resolve_profile(env={"RFDETECT_THREADS": "1"}, root=str(tmp_path)).cpu_threads == 1
    assert resolve_profile(threads="auto", env={"RFDETECT_THREADS": "3"}, root=str(tmp_path)).threads == 3
    p = resolve_profile(env={"RFDETECT_THREADS": "3"}, root=str(tmp_path))
    assert p.threads == 3 and "3 CPU thread(s) per model" in p.describe()
    assert resolve_profile(threads=2, env={"RFDETECT_THREADS": "3"}, root=str(tmp_path)).threads == 2
    for n in (1, 3):
        backend = open_backend(model_dir / "model.onnx", p.with_overrides(threads=n))
        assert backend.session.get_session_options().intra_op_num_threads == n


def test_pytorch_on_a_gpu_device_without_a_gpu_is_a_clear_error_then_onnx_is_used(model_dir, caplog):
    from gnuradio.rfdetect.inference.backends import TorchBackend
    with pytest.raises(BackendError, match="PyTorch sees no CUDA GPU"):
        TorchBackend(model_dir / "model.onnx", device="cuda:0")


def test_environment_score_threshold_replaces_the_cards(model_dir, monkeypatch):
    low = load_model(str(model_dir), SMALL, H, profile=CPU)
    monkeypatch.setenv("RFDETECT_SCORE_THRESHOLD", "0.99")
    high = load_model(str(model_dir), SMALL, H, profile=CPU)
    assert (low.score_threshold, high.score_threshold) == (0.5, 0.99)
    tile = _tile_with_burst()
    assert len(high.detect(tile)) < len(low.detect(tile))


def _with_card(model_dir, **change):
    """model_dir's card with ``change`` ({"thresholds": {...}, "output": {...}}) merged in."""
    import json
    path = card_for(model_dir / "model.onnx")
    card = json.loads(path.read_text())
    for key, sub in change.items():
        card[key].update(sub)
    path.write_text(json.dumps(card))


def test_card_score_floor_holds_whatever_threshold_the_model_is_run_at(model_dir):
    """thresholds.min_score: a model asked for boxes down to 0 (as AP scoring asks) still
    reports none under its card's floor; without the key it reports them."""
    tile = _tile_with_burst()
    low = load_model(f"{model_dir}?score=0", SMALL, H, profile=CPU)
    every = low.detect(tile)
    floor = float(np.median([b.score for b in every]))
    assert low.score_threshold == 0 and min(b.score for b in every) < floor
    _with_card(model_dir, thresholds={"score": floor, "min_score": floor})  # the floor is at most the card's
    floored = load_model(f"{model_dir}?score=0", SMALL, H, profile=CPU)
    kept = floored.detect(tile)
    assert floored.score_threshold == floor
    assert kept and len(kept) < len(every) and min(b.score for b in kept) >= floor
    higher = (floor + 1) / 2  # a threshold over the floor is the one that holds
    assert load_model(f"{model_dir}?score={higher}", SMALL, H, profile=CPU).score_threshold == higher


def test_card_width_cap_drops_wider_boxes(model_dir):
    """output.max_box_columns: boxes wider than that many tile columns are not reported (the
    grid model's boxes are 16 columns wide)."""
    tile = _tile_with_burst()
    assert load_model(str(model_dir), SMALL, H, profile=CPU).detect(tile)
    _with_card(model_dir, output={"max_box_columns": 16})
    assert load_model(str(model_dir), SMALL, H, profile=CPU).detect(tile)
    _with_card(model_dir, output={"max_box_columns": 15})
    assert load_model(str(model_dir), SMALL, H, profile=CPU).detect(tile) == []


def test_card_height_cap_drops_taller_boxes(model_dir):
    """output.max_box_rows: boxes taller than that many tile rows are not reported; with the
    cap at the tallest box's height every box stays."""
    tile = _tile_with_burst()
    boxes = load_model(str(model_dir), SMALL, H, profile=CPU).detect(tile)
    heights = sorted(b.y1 - b.y0 for b in boxes)
    assert heights and heights[0] > 2, heights
    _with_card(model_dir, output={"max_box_rows": int(np.ceil(heights[-1]))})
    assert len(load_model(str(model_dir), SMALL, H, profile=CPU).detect(tile)) == len(boxes)
    _with_card(model_dir, output={"max_box_rows": int(np.ceil(heights[0])) - 1})
    assert load_model(str(model_dir), SMALL, H, profile=CPU).detect(tile) == []


@pytest.mark.parametrize("change,msg", [
    ({"thresholds": {"min_score": 1.5}}, "thresholds.min_score 1.5 must be in"),
    ({"thresholds": {"min_score": "high"}}, "thresholds.min_score 'high' must be in"),
    ({"thresholds": {"min_score": 0.9}}, "thresholds.min_score 0.9 is over thresholds.score 0.5"),
    ({"output": {"max_box_columns": 0}}, "output.max_box_columns 0 must be a whole number"),
    ({"output": {"max_box_columns": 2.5}}, "output.max_box_columns 2.5 must be a whole number"),
    ({"output": {"max_box_columns": True}}, "output.max_box_columns True must be a whole number"),
    ({"output": {"max_box_rows": 0}}, "output.max_box_rows 0 must be a whole number of rows"),
    ({"output": {"max_box_rows": "tall"}}, "output.max_box_rows 'tall' must be a whole number of rows"),
])
def test_bad_card_floor_or_width_cap_is_one_clear_error(model_dir, change, msg):
    _with_card(model_dir, **change)
    with pytest.raises(ModelError, match=msg):
        load_model(str(model_dir), SMALL, H, profile=CPU)


# ---------------------------------------------------------------- per-model options
def test_model_entries_parse_from_strings_and_dicts():
    s = ModelSpec.parse("/m/x.onnx?backend=pytorch&score=0.6&labels=ofdm|chirp&name=x1")
    assert (s.model, s.backend, s.score_threshold, s.labels, s.name) == ("/m/x.onnx", "pytorch", 0.6,
                                                                        ["ofdm", "chirp"], "x1")
    d = ModelSpec.parse({"model": "default", "labels": ["tone"], "score_threshold": 0.3})
    assert (d.model, d.labels, d.score_threshold) == ("default", ["tone"], 0.3)
    for bad, msg in [("m?colour=red", "unknown option 'colour'"), ("m?score=high", "not a number"),
                     ({"backend": "pytorch"}, "needs a \"model\" key"), ("?score=1", "names no model")]:
        with pytest.raises(ModelError, match=msg):
            ModelSpec.parse(bad)


def test_labels_option_keeps_only_those_labels():
    keep = load_model({"model": "default", "labels": ["tone", "chirp"]}, _default_params(), 1024, profile=CPU)
    every = load_model("default", _default_params(), 1024, profile=CPU)
    assert keep.keep_labels == {"tone", "chirp"} and every.keep_labels is None
    with pytest.raises(ModelError, match=r"labels \['satellite'\] are not among"):
        load_model("default?labels=satellite", _default_params(), 1024, profile=CPU)


def _default_params():
    from gnuradio.rfdetect.dsp.spectrogram import SpectrogramParams
    return SpectrogramParams()


def test_two_models_of_one_name_are_refused():
    from gnuradio.rfdetect.inference.model_runtime import EnergyModel
    with pytest.raises(ValueError, match="several models are named \\['energy'\\]"):
        TileDetector([EnergyModel(SMALL), EnergyModel(SMALL)], SMALL, tile_height=16, overlap=0)
    det = TileDetector([EnergyModel(SMALL), EnergyModel(SMALL, name="energy2", score_threshold=0.9)], SMALL,
                       tile_height=16, overlap=0)
    det.stop()
    assert set(det.model_stats) == {"energy", "energy2"}


# ---------------------------------------------------------------- frequency chunks, batching
@pytest.mark.parametrize("batch", [1, "n"])
def test_a_model_narrower_than_the_spectrogram_sees_frequency_chunks(tmp_path, batch):
    path = make_grid_model(tmp_path / "narrow.onnx", SMALL, H, width=128, batch=batch, k=1)
    m = load_model(str(path), SMALL, H, profile=CPU.with_overrides(batch_size=3))
    assert m.chunk_width == 128 and m.backend.batch_dynamic == (batch == "n")
    assert m.batch_size == (3 if batch == "n" else 1)
    tile = _tile_with_burst(x0=400, x1=416, y0=32, y1=48)  # in the 4th chunk (384..512)
    tile[96:112, 16:32] = 0.8  # and one in the 1st
    boxes = sorted(m.detect(tile), key=lambda b: b.score, reverse=True)
    # one box per chunk (k=1); the empty chunks' boxes score under the card's 0.5
    assert len(boxes) == 2
    assert (boxes[0].x0, boxes[0].y0, boxes[0].x1) == (400, 32, 416)
    assert (boxes[1].x0, boxes[1].y0) == (16, 96)


def test_a_card_width_that_does_not_divide_the_row_is_refused(tmp_path):
    path = make_grid_model(tmp_path / "odd.onnx", SMALL, H, width=96)
    with pytest.raises(ModelError, match="takes tiles of shape"):
        load_model(str(path), SMALL, H, profile=CPU)


# ---------------------------------------------------------------- concurrency and statistics
class Sleeper:
    """A model that waits without holding the GIL, like a network on its own stream."""

    labels = ["x"]

    def __init__(self, name, delay, fail_every=0):
        self.name, self.delay, self.fail_every = name, delay, fail_every
        self.calls = 0

    def detect(self, tile):
        self.calls += 1
        time.sleep(self.delay)
        if self.fail_every and self.calls % self.fail_every == 0:
            raise RuntimeError("model blew up")
        return [PixelBox(0, 0, 4, 4, 0.9, "x")]


def _run_tiles(models, n_tiles, **kw):
    got = []
    det = TileDetector(models, SMALL, tile_height=16, overlap=0, sample_rate=1e6,
                       on_tile=lambda info, recs: got.append(recs), **kw)
    rows = np.zeros((16, SMALL.width), np.float32)
    t0 = time.perf_counter()
    for _ in range(n_tiles):
        det.push_rows(rows)
    det.finish(timeout=30)
    elapsed = time.perf_counter() - t0
    det.stop()
    return det, got, elapsed


def test_auto_concurrency_runs_models_side_by_side_when_that_is_faster():
    models = [Sleeper("a", 0.03), Sleeper("b", 0.03), Sleeper("c", 0.03)]
    det, got, _ = _run_tiles(models, 3)
    assert det.concurrency == "parallel"
    t = det.concurrency_timing_ms
    assert t["parallel"] < 0.6 * t["serial"]  # three 30 ms waits overlap: ~30 ms vs ~90 ms
    assert det.stats()["concurrency"] == "parallel"


def test_parallel_models_one_failing_the_others_go_on_and_stats_count_it():
    models = [Sleeper("ok", 0.005), Sleeper("flaky", 0.005, fail_every=2)]
    det, got, _ = _run_tiles(models, 8, concurrency="parallel")
    st = det.stats()
    assert st["concurrency"] == "parallel" and st["tiles_done"] == 8
    assert st["models"]["ok"]["tiles"] == 8 and st["models"]["ok"]["errors"] == 0
    assert st["models"]["flaky"]["errors"] == 4 and st["models"]["flaky"]["tiles"] == 4
    assert st["models"]["flaky"]["last_error"] == "RuntimeError: model blew up"
    assert sum(r["model"] == "ok" for recs in got for r in recs) == 8
    assert sum(r["model"] == "flaky" for recs in got for r in recs) == 4
    for name in ("ok", "flaky"):
        s = st["models"][name]
        assert s["latency_ms_p99"] >= s["latency_ms_p50"] >= 4.0 and s["tiles_per_s"] > 0


def test_card_model_stats_name_backend_device_and_warmup(model_dir):
    m = load_model(str(model_dir), SMALL, H, profile=CPU)
    det = TileDetector([m], SMALL, tile_height=H, overlap=0)
    det.stop()
    s = det.stats()["models"]["grid16"]
    assert (s["backend"], s["device"], s["precision"]) == ("onnxruntime", "cpu", "fp32")
    assert s["warmup_ms"] > 0 and s["file"].endswith("model.onnx") and "gpu_memory" not in s


def test_onnx_backend_on_a_gpu_device_without_gpu_providers_reports_the_cpu(model_dir):
    b = OnnxBackend(model_dir / "model.onnx", device="cuda:0")
    assert b.device == "cpu" and b.providers == ["CPUExecutionProvider"]


def test_detector_block_takes_options_per_model_and_profile_overrides(model_dir, tmp_path):
    from gnuradio.rfdetect.blocks.detector import detector
    shutil.copytree(model_dir, tmp_path / "second")
    blk = detector(models=f"{model_dir}?name=first&score=0.6, {tmp_path / 'second'}?name=second, energy",
                   tile_height=H, overlap=16, width=SMALL.width, profile="cpu", backend="onnxruntime",
                   concurrency="serial")
    blk.configure(SMALL)
    try:
        names = [m.name for m in blk.engine.models]
        assert names == ["first", "second", "energy"]
        assert blk.engine.models[0].score_threshold == 0.6 and blk.engine.concurrency == "serial"
        assert blk.profile.backends == ("onnxruntime",)
    finally:
        blk.engine.stop()
    with pytest.raises(ProfileError, match="profile 'tpu'"):
        detector(models="energy", width=SMALL.width, profile="tpu")


def test_detector_loads_card_models_at_start_and_refuses_another_stft(model_dir, tmp_path):
    """Models load in start() (no stall of a real-time source on the first row); an STFT
    Tile with other settings is then refused by name."""
    from gnuradio import blocks, gr

    from gnuradio import rfdetect
    from gnuradio.rfdetect.blocks.detector import detector
    blk = detector(models=str(model_dir), tile_height=H, overlap=16, width=SMALL.width)
    assert blk.start() and blk.engine is not None and blk.engine.params == SMALL
    blk.engine.stop()
    tb = gr.top_block()
    src = blocks.vector_source_c([0j] * 20000)
    stft = rfdetect.stft_tile(fft_size=SMALL.fft_size, hop=SMALL.hop, width=SMALL.width, window="hamming",
                              device="cpu")
    det = detector(models=str(model_dir), tile_height=H, overlap=16, width=SMALL.width)
    tb.connect(src, stft, det)
    tb.run()
    assert "window: 'hann' != 'hamming'" in det.error and "retrain" in det.error
