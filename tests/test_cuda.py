"""The GPU paths on a real CUDA GPU: CuPy/cuFFT spectrogram rows against the CPU kernel,
the PyTorch backend on CUDA against the CPU, several models side by side on one GPU.

Skipped, saying why, where PyTorch sees no CUDA GPU (CI has none); the CPU halves of
these paths (staged engine, fallback, tolerance) are in test_gpu_paths.py. Run on a GPU
machine with ``python -m pytest tests/test_cuda.py``.
"""
import numpy as np
import pytest

from gnuradio.rfdetect.dsp.spectrogram import SpectrogramEngine, SpectrogramParams

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("no CUDA GPU visible to PyTorch here", allow_module_level=True)

from gnuradio.rfdetect.dsp.spectrogram_gpu import (PIECE_ROWS, CudaSpectrogramEngine, check_frame,  # noqa: E402
                                                   make_spectrogram_engine, row_gap, row_tolerance)
from gnuradio.rfdetect.inference.backends import TorchBackend, save_torch_program  # noqa: E402

LABELS = ["ofdm", "tone"]


def noise(n, seed=0):
    rng = np.random.default_rng(seed)
    return ((rng.standard_normal(n) + 1j * rng.standard_normal(n)) * np.sqrt(0.5)).astype(np.complex64)


@pytest.mark.parametrize("params", [SpectrogramParams(), SpectrogramParams(fft_size=1024, hop=256, width=256),
                                    SpectrogramParams(fft_size=512, hop=512, width=512, normalisation="none")])
def test_gpu_rows_agree_with_the_cpu_kernel_at_every_call_size(params):
    pytest.importorskip("cupy")
    gpu = CudaSpectrogramEngine(params)
    cpu = SpectrogramEngine(params, threads=1)
    tol = row_tolerance(params)
    worst = {}
    for rows in (1, 3, 48, PIECE_ROWS, PIECE_ROWS + 300):  # odd buckets, a full piece, two pieces
        for name, x in (("check frame", check_frame(params, rows)),
                        ("noise", noise(gpu.frames_needed(rows), rows))):
            got = gpu.compute(x, rows)
            ref = cpu.compute(x, rows)
            assert got.shape == ref.shape == (rows, params.width)
            assert np.isfinite(got).all()
            worst[(rows, name)] = row_gap(got, ref, params)
    gpu.close()
    print(params.normalisation, params.fft_size, worst)
    assert max(worst.values()) <= tol, worst
    # and not trivially: the rows hold signal, not a constant
    assert float(np.ptp(ref)) > 0.1


def test_auto_picks_the_gpu_when_its_rows_agree():
    pytest.importorskip("cupy")
    engine = make_spectrogram_engine(SpectrogramParams(), "auto")
    try:
        assert isinstance(engine, CudaSpectrogramEngine)
    finally:
        engine.close()


def _export(tmp_path, name, seed):
    from rfdetect_training.archs import make_arch
    params = SpectrogramParams(fft_size=512, hop=512, width=256)
    arch = make_arch("anchor_free", LABELS, None, params, 256)
    torch.manual_seed(seed)
    module = arch.export_module(arch.build().eval()).eval()
    tile = np.random.default_rng(seed).random((256, 256), dtype=np.float32)
    inputs = arch.example_inputs(tile)
    path = tmp_path / f"{name}.pt"
    save_torch_program(module, inputs, path, arch.input_names, arch.output_names, dynamic_batch=False)
    feed = {n: (t.numpy() if hasattr(t, "numpy") else np.asarray(t)) for n, t in zip(arch.input_names, inputs)}
    return path, feed, arch.output_names


def test_torch_backend_on_cuda_gives_the_cpu_outputs_on_its_own_stream(tmp_path):
    path, feed, outputs = _export(tmp_path, "m", 0)
    cpu = TorchBackend(path, "cpu").run(feed, outputs)
    g32 = TorchBackend(path, "cuda:0", "fp32")
    g16 = TorchBackend(path, "cuda:0", "fp16")
    assert g32.stream is not None and g32.stream != torch.cuda.default_stream(0)
    assert g32.stream != g16.stream
    for got, ref in zip(g32.run(feed, outputs), cpu):
        assert got.dtype == ref.dtype and got.shape == ref.shape
        np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-3)
    for got, ref in zip(g16.run(feed, outputs), cpu):
        assert got.shape == ref.shape and np.isfinite(got).all()
        np.testing.assert_allclose(got, ref, rtol=0.05, atol=0.05)


def test_models_side_by_side_on_one_gpu_give_what_they_give_one_after_another(tmp_path):
    from concurrent.futures import ThreadPoolExecutor
    exported = [_export(tmp_path, f"m{i}", i) for i in range(3)]
    backends = [TorchBackend(p, "cuda:0") for p, _, _ in exported]
    assert len({b.stream.cuda_stream for b in backends}) == 3
    serial = [b.run(feed, outs) for b, (_, feed, outs) in zip(backends, exported)]
    with ThreadPoolExecutor(3) as pool:
        for _ in range(5):
            side = list(pool.map(lambda i: backends[i].run(exported[i][1], exported[i][2]), range(3)))
            for a, b in zip(side, serial):
                for x, y in zip(a, b):
                    np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("amp", [True, False], ids=["mixed precision (the default on CUDA)", "fp32"])
def test_training_on_cuda_learns_and_exports(tmp_path, amp):
    import csv

    from conftest import RATE, SMALL_ARGS
    from gnuradio.rfdetect.apps.synth import synth_dataset
    from rfdetect_training.cli import main
    data = tmp_path / "data"
    synth_dataset(data, n=6, seed=3, sample_rate=RATE, duration=0.3, snr_db=(12.0, 25.0), n_signals=10)
    out = tmp_path / "model"
    rc = main(["run", "--data", str(data), "--out", str(out), *SMALL_ARGS, "--arch", "anchor_free", "--epochs", "12",
               "--device", "cuda", "--no-engine", "--quiet", *([] if amp else ["--no-amp"])])
    assert rc in (None, 0)
    rows = list(csv.DictReader(open(out / "work" / "runs" / "final" / "metrics.csv")))
    assert len(rows) >= 3
    losses = [float(r["train_loss"]) for r in rows]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0], losses
    assert max(float(r["val_ap50"]) for r in rows) > 0.05, rows[-1]
    assert (out / "model.onnx").is_file() and (out / "model.card.json").is_file()
