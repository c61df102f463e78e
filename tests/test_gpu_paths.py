"""GPU and TensorRT paths that cannot run here (no GPU, no TensorRT), tested through
everything they share with paths that do run.

STFT: the GPU engine's pipeline (pieces, plan buckets, framing, row math) runs here on
NumPy (``NumpyOps``); the start-up check that decides between GPU and CPU is driven by
STAND-INS for a GPU engine -- real engines run on the CPU whose rows are deliberately
wrong or that fail -- because a CuPy engine cannot be made here. What remains
unexecuted is the CuPy layer itself (spectrogram_gpu._CupyOps) and the real cuFFT rows.
"""
import logging

import numpy as np
import pytest

from gnuradio.rfdetect import spectrogram_gpu
from gnuradio.rfdetect.spectrogram import SpectrogramEngine, SpectrogramParams, StreamingSpectrogram, spectrogram
from gnuradio.rfdetect.spectrogram_gpu import (PIECE_ROWS, ROW_TOLERANCE, NumpyOps, StagedSpectrogramEngine,
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


def test_gpu_that_fails_on_the_test_frame_is_refused_naming_the_error(monkeypatch):
    said, say = _stand_in(monkeypatch, lambda p, i: StagedSpectrogramEngine(p, _FailingOps()))
    assert type(make_spectrogram_engine(SMALL, "auto", say=say)) is SpectrogramEngine
    assert said == [(logging.WARNING, "STFT on the CPU, not GPU 0: it failed on a test frame "
                                      "(RuntimeError: CUFFT_INTERNAL_ERROR)")]


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
