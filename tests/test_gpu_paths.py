"""GPU and TensorRT paths that cannot run here (no GPU, no TensorRT), tested through
everything they share with paths that do run.

STFT: the GPU engine's pipeline (pieces, plan buckets, framing, row math) runs here on
NumPy (``NumpyOps``); the start-up check that decides between GPU and CPU is driven by
STAND-INS for a GPU engine -- real engines run on the CPU whose rows are deliberately
wrong or that fail -- because a CuPy engine cannot be made here. What remains
unexecuted is the CuPy layer itself (spectrogram_gpu._CupyOps) and the real cuFFT rows.
"""
import logging
from pathlib import Path

import numpy as np
import pytest

from gnuradio.rfdetect.dsp import spectrogram_gpu
from gnuradio.rfdetect.dsp.spectrogram import SpectrogramEngine, SpectrogramParams, StreamingSpectrogram, spectrogram
from gnuradio.rfdetect.dsp.spectrogram_gpu import (PIECE_ROWS, ROW_TOLERANCE, NumpyOps, StagedSpectrogramEngine,
                                               make_spectrogram_engine, plan_bucket, row_tolerance)

from conftest import SMALL


def _noise(n_rows, p=SMALL, seed=3):
    rng = np.random.default_rng(seed)
    n = n_rows * p.hop + p.history
    x = rng.standard_normal(n) + 1j * rng.standard_normal(n)
    x[n // 4:n // 2] += 20 * np.exp(2j * np.pi * 0.2 * np.arange(n // 4))
    return x.astype(np.complex64)


# ---------------------------------------------------------------- the GPU engine's pipeline, on NumPy
def test_plan_buckets_are_powers_of_two_up_to_the_piece_size():
    assert [plan_bucket(n) for n in (1, 2, 3, 5, 31, 32, 33, 1000, PIECE_ROWS)] == \
        [1, 2, 4, 8, 32, 32, 64, 1024, PIECE_ROWS]
    for bad in (0, PIECE_ROWS + 1):
        with pytest.raises(ValueError, match="a piece holds"):
            plan_bucket(bad)


def test_staged_engine_keeps_one_plan_per_bucket_whatever_the_call_sizes_and_gives_the_cpu_rows():
    """The plan-cache bound, on the code the GPU engine runs (NumPy in place of CuPy):
    a hundred different call sizes, up to two pieces long, make at most
    log2(PIECE_ROWS) + 1 plans, and every row equals the CPU NumPy kernel's."""
    staged = StagedSpectrogramEngine(SMALL, NumpyOps())
    cpu = SpectrogramEngine(SMALL, kernel="numpy", threads=1)
    rng = np.random.default_rng(0)
    sizes = sorted(set(rng.integers(1, 2 * PIECE_ROWS + 50, 100).tolist()) | {1, PIECE_ROWS, PIECE_ROWS + 1})
    x = _noise(max(sizes))
    for n in sizes[::7] + sizes[-1:]:
        got, ref = staged.compute(x, n), cpu.compute(x, n)
        assert got.shape == (n, SMALL.width) and np.abs(got - ref).max() <= 1e-6, n
    for n in sizes:  # the bound holds after every size was seen
        staged.compute(x, n)
    assert len(sizes) > 90
    assert len(staged.plans) <= PIECE_ROWS.bit_length()
    assert all(b & (b - 1) == 0 and b <= PIECE_ROWS for b in staged.plans)


@pytest.mark.parametrize("p", [SpectrogramParams(fft_size=1024, hop=256, width=256, pooling="max"),
                               SpectrogramParams(fft_size=1024, hop=1024, width=512, normalisation="none")])
def test_staged_engine_streams_the_same_rows_as_the_one_spectrogram_function(p):
    x = _noise(700, p, seed=9)
    stream = StreamingSpectrogram(p, StagedSpectrogramEngine(p, NumpyOps()))
    rng = np.random.default_rng(1)
    rows, a = [], 0
    while a < len(x):
        step = int(rng.integers(1, 40 * p.hop))
        rows.append(stream.push(x[a:a + step]))
        a += step
    got = np.concatenate(rows)
    ref = spectrogram(x, p, SpectrogramEngine(p, kernel="numpy", threads=1))
    assert got.shape == ref.shape and np.abs(got - ref).max() <= 1e-6 * (1 if p.normalisation == "floor" else 100)


# ---------------------------------------------------------------- choosing the GPU: stand-ins
class _OffByOneBinOps(NumpyOps):
    """STAND-IN for a GPU whose FFT output is one bin off (a wrong shift): real rows,
    wrong by construction."""

    def fft(self, frames, plan):
        return np.roll(super().fft(frames, plan), 1, axis=-1)


class _FailingOps(NumpyOps):
    """STAND-IN for a GPU that fails on first contact (as a missing NVRTC or a cuFFT
    error would)."""

    def fft(self, frames, plan):
        raise RuntimeError("CUFFT_INTERNAL_ERROR\nmore lines")


class _RowsOffBy(SpectrogramEngine):
    """STAND-IN for a GPU engine: the CPU engine with ``delta`` added to every row."""

    delta = 0.0

    def __init__(self, params, index=0):
        super().__init__(params, threads=1)

    def compute(self, x, n_rows, out=None):
        out = super().compute(x, n_rows, out)
        out += np.float32(self.delta)
        return out


def _stand_in(monkeypatch, make):
    monkeypatch.setattr(spectrogram_gpu, "CudaSpectrogramEngine", make)
    said = []
    return said, (lambda level, msg: said.append((level, msg)))


@pytest.mark.parametrize("device", ["auto", "cuda:0"])
def test_gpu_whose_rows_differ_is_refused_with_a_warning_and_the_cpu_runs(monkeypatch, device):
    said, say = _stand_in(monkeypatch, lambda p, i: StagedSpectrogramEngine(p, _OffByOneBinOps()))
    engine = make_spectrogram_engine(SMALL, device, say=say)
    assert type(engine) is SpectrogramEngine
    (level, msg), = said
    assert level == logging.WARNING and msg.startswith("STFT on the CPU, not GPU 0: its rows of a test frame "
                                                       "differ from the CPU kernel's by up to")
    assert f"(tolerance {ROW_TOLERANCE:.3g})" in msg


def _unusable_driver(params, index):
    raise RuntimeError("cudaErrorInsufficientDriver: CUDA driver version is insufficient")


@pytest.mark.parametrize("make,why", [
    (lambda p, i: StagedSpectrogramEngine(p, _FailingOps()),
     "it failed on a test frame (RuntimeError: CUFFT_INTERNAL_ERROR)"),
    (_unusable_driver, "it could not be set up (RuntimeError: cudaErrorInsufficientDriver: CUDA driver "
                       "version is insufficient)"),
])
def test_gpu_that_fails_on_first_contact_is_refused_naming_the_error(monkeypatch, make, why):
    said, say = _stand_in(monkeypatch, make)
    assert type(make_spectrogram_engine(SMALL, "auto", say=say)) is SpectrogramEngine
    assert said == [(logging.WARNING, f"STFT on the CPU, not GPU 0: {why}")]


@pytest.mark.parametrize("factor,picked", [(0.5, True), (2.0, False)])
def test_the_row_tolerance_is_the_line_between_gpu_and_cpu(monkeypatch, factor, picked):
    p = SpectrogramParams(fft_size=1024, hop=512, width=512, normalisation="none")
    assert row_tolerance(p) == pytest.approx(ROW_TOLERANCE * 60)  # plain-dB rows: tolerance in dB
    for params in (SMALL, p):
        delta = factor * row_tolerance(params)
        stand_in = type("RowsOff", (_RowsOffBy,), {"delta": delta})
        said, say = _stand_in(monkeypatch, stand_in)
        engine = make_spectrogram_engine(params, "auto", say=say)
        assert isinstance(engine, stand_in) is picked, (params, said)
        warnings = [msg for lvl, msg in said if lvl >= logging.WARNING]
        assert len(warnings) == (0 if picked else 1), warnings


def test_stft_tile_on_auto_with_a_gpu_whose_rows_differ_outputs_the_cpu_rows(monkeypatch):
    from gnuradio import blocks, gr

    from gnuradio import rfdetect
    monkeypatch.setattr(spectrogram_gpu, "CudaSpectrogramEngine",
                        lambda p, i: StagedSpectrogramEngine(p, _OffByOneBinOps()))
    x = _noise(300)
    tb = gr.top_block()
    src = blocks.vector_source_c(x.tolist(), False)
    stft = rfdetect.stft_tile(fft_size=SMALL.fft_size, hop=SMALL.hop, width=SMALL.width, device="auto")
    sink = blocks.vector_sink_f(SMALL.width)
    tb.connect(src, stft, sink)
    tb.run()
    assert type(stft.engine) is SpectrogramEngine
    rows = np.array(sink.data(), np.float32).reshape(-1, SMALL.width)
    ref = spectrogram(x, SMALL)
    assert rows.shape == ref.shape and np.abs(rows - ref).max() <= 1e-6


# ---------------------------------------------------------------- TensorRT: what runs around it
from gnuradio.rfdetect.gpu import BackendError  # noqa: E402
from gnuradio.rfdetect.inference.backends import (OnnxBackend, onnx_providers,  # noqa: E402
                                        ort_engine_cache_dir, run_in_batches)
from gnuradio.rfdetect.inference.model_runtime import (ModelCard, card_for, load_model, model_candidates,  # noqa: E402
                                             onnx_beside, open_engine)
from gnuradio.rfdetect.inference.tensorrt_backend import (INT8_CALIBRATION_REMOVED, TensorRTUnavailable,  # noqa: E402
                                                build_engine, card_max_batch, validate_engine)

from conftest import TILE  # noqa: E402
from onnx_grid_model import make_grid_model  # noqa: E402

H = TILE["tile_height"]


@pytest.fixture
def model_dir(tmp_path):
    d = tmp_path / "grid"
    d.mkdir()
    make_grid_model(d / "model.onnx", SMALL, H)
    return d


def test_trt_and_plan_are_engines_like_engine(model_dir):
    """Real files: .trt (the project card's word) and .plan resolve as TensorRT engines,
    before the ONNX model, sharing its card; engines rebuilt for a GPU come after those
    exported with the model."""
    for name in ("model.trt", "model.plan", "model.engine", "model.gpu-a-sm87-trt10.3.0.fp16.engine", "model.pt"):
        (model_dir / name).write_bytes(b"not an engine for this GPU")
    assert [p.name for p in model_candidates(str(model_dir))] == [
        "model.engine", "model.trt", "model.plan", "model.gpu-a-sm87-trt10.3.0.fp16.engine", "model.onnx", "model.pt"]
    assert [p.name for p in model_candidates(str(model_dir), ("onnxruntime",))] == ["model.onnx"]
    for name in ("model.trt", "model.plan"):
        engine = model_dir / name
        assert card_for(engine) == model_dir / "model.card.json" and onnx_beside(engine) == model_dir / "model.onnx"
        assert model_candidates(str(engine)) == [engine, model_dir / "model.onnx"]
        with pytest.raises(Exception, match=r"needs the tensorrt backend, but only \['onnxruntime'\]"):
            model_candidates(str(engine), ("onnxruntime",))
    (model_dir / "model.tflite").write_bytes(b"")
    with pytest.raises(Exception, match=r"unsupported format '.tflite' \(use one of .engine, .trt, .plan, .onnx"):
        model_candidates(str(model_dir / "model.tflite"))


def test_a_trt_file_without_tensorrt_here_falls_back_to_the_onnx_beside_it(model_dir, caplog):
    from gnuradio.rfdetect.inference.hardware_profile import PROFILES
    (model_dir / "model.trt").write_bytes(b"an engine")
    caplog.set_level(logging.WARNING, "rfdetect.models")
    m = load_model(str(model_dir / "model.trt"), SMALL, H, profile=PROFILES["desktop-gpu"])
    assert m.backend.kind == "onnxruntime" and m.backend.path.name == "model.onnx"
    assert "skipped model.trt: TensorRT is not installed" in caplog.text


class _Builds:
    """STAND-IN for TensorRT's load and build (open_engine's hooks): engines 'load' when
    their bytes say so; ``build`` writes an engine and then fails the way ``fail`` says."""

    def __init__(self, fail=None, writes=b"good"):
        self.fail, self.writes, self.builds = fail, writes, 0

    def load(self, path, device, precision):
        if path.read_bytes() != b"good":
            raise BackendError(f"cannot deserialise {path.name} on this GPU")
        return ("engine", path.name)

    def build(self, onnx, out):
        self.builds += 1
        out.write_bytes(self.writes)
        if self.fail is not None:
            raise self.fail

    def cache_path(self, onnx):
        return onnx.with_name("model.gpu-a-sm87-trt10.3.0.fp16.engine")


@pytest.mark.parametrize("fail,writes,message", [
    (BackendError("engine x: output probs differs from ONNX Runtime by 0.3"), b"good",
     "differs from ONNX Runtime by 0.3"),
    (RuntimeError("out of GPU memory\nmore"), b"good",
     r"building a TensorRT engine from .*model.onnx failed \(RuntimeError: out of GPU memory\)"),
    (None, b"built but will not deserialise", "cannot deserialise model.gpu-a-sm87-trt10.3.0.fp16.engine"),
])
def test_an_engine_that_fails_validation_is_deleted_not_cached(model_dir, fail, writes, message):
    """Through open_engine's hooks: a rebuilt engine that fails validation (or the build,
    or does not load once built) is deleted, the error is a BackendError (the caller
    goes on to the ONNX model), and the next start builds again instead of loading it."""
    (model_dir / "model.engine").write_bytes(b"from another GPU")
    fake = _Builds(fail, writes)
    cached = fake.cache_path(model_dir / "model.onnx")
    for attempt in (1, 2):
        with pytest.raises(BackendError, match=message):
            open_engine(model_dir / "model.engine", "cuda:0", "fp16", fake.load, fake.build, fake.cache_path)
        assert not cached.exists() and fake.builds == attempt
    assert (model_dir / "model.engine").read_bytes() == b"from another GPU"  # the exported one is kept


def test_validate_engine_without_tensorrt_judges_nothing_and_deletes_nothing(model_dir):
    engine = model_dir / "model.engine"
    engine.write_bytes(b"an engine")
    with pytest.raises(TensorRTUnavailable, match="TensorRT is not installed"):
        validate_engine(engine, model_dir / "model.onnx")
    assert engine.read_bytes() == b"an engine"


def test_the_optimisation_profile_maximum_comes_from_the_card(model_dir):
    from gnuradio.rfdetect.inference.model_runtime import EMBEDDED_DIR
    default = ModelCard.load(card_for(EMBEDDED_DIR / "classic" / "model.onnx"))  # a two_stage model
    assert default.output_format == "crop_classifier/1"
    assert card_max_batch(default) == 1024 * 1024 // 64 ** 2  # one tile of crops
    default.extra["crop_size"] = 32
    assert card_max_batch(default) == 1024 * 1024 // 32 ** 2
    narrow = make_grid_model(model_dir / "narrow.onnx", SMALL, H, width=128, batch="n")
    assert card_max_batch(ModelCard.load(card_for(narrow))) == SMALL.width // 128  # frequency chunks per tile
    assert card_max_batch(ModelCard.load(card_for(model_dir / "model.onnx"))) == 1


def test_calls_bigger_than_the_profile_maximum_are_split_and_joined(model_dir):
    """The split TensorRTBackend.run applies, on a real ONNX Runtime network with a
    dynamic first dimension: 7 chunks in calls of at most 3 give the one-call outputs."""
    path = make_grid_model(model_dir / "narrow.onnx", SMALL, H, width=128, batch="n")
    b = OnnxBackend(path)
    rng = np.random.default_rng(2)
    x = rng.random((7, 1, H, 128), dtype=np.float32)
    calls = []

    def run(feed, outputs):
        calls.append(len(feed[b.input_names[0]]))
        return b.run(feed, outputs)

    whole = b.run({b.input_names[0]: x}, b.output_names)
    split = run_in_batches(run, {b.input_names[0]: x}, b.output_names, 3)
    assert calls == [3, 3, 1]
    for w, s in zip(whole, split):
        assert w.shape == s.shape and np.array_equal(w, s)
    assert run_in_batches(run, {b.input_names[0]: x[:2]}, b.output_names, 3)[0].shape[0] == whole[0][:2].shape[0]
    with pytest.raises(BackendError, match="differ in their first dimension"):
        run_in_batches(run, {"crops": x, "geometry": x[:3]}, b.output_names, 3)


def test_int8_calibration_is_refused_with_the_reason(model_dir):
    with pytest.raises(BackendError, match="IInt8EntropyCalibrator2.*deprecated in TensorRT 10.1"):
        build_engine(model_dir / "model.onnx", int8_calibration_dir=str(model_dir))
    assert "Q/DQ" in INT8_CALIBRATION_REMOVED


# ---------------------------------------------------------------- ONNX Runtime's TensorRT provider
ALL = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


def test_onnx_runtime_tensorrt_provider_gets_its_engine_cache(model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("RFDETECT_CACHE_DIR", str(tmp_path / "cache"))
    model = model_dir / "model.onnx"
    trt, cuda, cpu = onnx_providers(ALL, 1, "fp16", model, "1.20.1")
    assert trt[0] == "TensorrtExecutionProvider" and cuda == ("CUDAExecutionProvider", {"device_id": 1})
    opts = trt[1]
    assert opts["device_id"] == 1 and opts["trt_fp16_enable"] is True and opts["trt_engine_cache_enable"] is True
    cache = opts["trt_engine_cache_path"]
    assert cache.startswith(str(tmp_path / "cache" / "ort-tensorrt" / "ort1.20.1" / "model-")) and Path(cache).is_dir()
    assert cpu == "CPUExecutionProvider"
    # another runtime or a changed model gets another folder
    assert ort_engine_cache_dir(model, "1.21.0") != Path(cache)
    make_grid_model(model, SMALL, H, k=2)
    assert ort_engine_cache_dir(model, "1.20.1") != Path(cache)
    # no GPU device, or a CPU-only build: the CPU provider alone
    assert onnx_providers(ALL, None, "fp16", model, "1.20.1") == ["CPUExecutionProvider"]
    assert onnx_providers(["CPUExecutionProvider"], 0, "fp16", model, "1.20.1") == ["CPUExecutionProvider"]


def test_an_unwritable_engine_cache_is_said_and_the_provider_still_used(model_dir, tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder would go")
    monkeypatch.setenv("RFDETECT_CACHE_DIR", str(blocker))
    caplog.set_level(logging.WARNING, "rfdetect.models")
    (name, opts), *_ = onnx_providers(ALL, 0, "fp32", model_dir / "model.onnx", "1.20.1")
    assert name == "TensorrtExecutionProvider" and "trt_engine_cache_enable" not in opts
    assert "are not cached" in caplog.text and "RFDETECT_CACHE_DIR" in caplog.text


def test_without_onnx_runtime_the_error_says_which_extra_to_install(model_dir, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what `import` sees when it is not installed
    with pytest.raises(BackendError, match=r"ONNX Runtime is not installed here: pip install 'gr-rfdetect\[cpu\]'"):
        OnnxBackend(model_dir / "model.onnx")


# ---------------------------------------------------------------- packaging
def test_onnx_runtime_is_an_extra_so_a_jetsons_onnxruntime_gpu_is_not_replaced():
    import re
    import tomllib
    root = Path(__file__).resolve().parent.parent
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]

    def names(reqs):
        return {re.match(r"[A-Za-z0-9_.-]+", r.strip()).group(0).lower() for r in reqs if r.strip()}

    assert not {n for n in names(project["dependencies"]) if n.startswith("onnxruntime")}
    extras = project["optional-dependencies"]
    assert names(extras["cpu"]) == {"onnxruntime"} and names(extras["gpu"]) == {"onnxruntime-gpu"}
    assert "onnxruntime" in names(extras["test"])
    # `make test` installs requirements-test.txt, then the package without dependencies
    reqs = [line.split("#")[0] for line in (root / "requirements-test.txt").read_text().splitlines()]
    assert "onnxruntime" in names(reqs)
    makefile = (root / "Makefile").read_text()
    assert "-r requirements-test.txt" in makefile and "--no-deps" in makefile
