"""The native side (gr-rfdetect/): the C++ STFT Tile against the pybind11 kernel that
training and the offline detect path use, its tags against the Python block's, its
errors; the kernel module itself. Real flowgraphs, small sizes (conftest.SMALL)."""
import glob
import os
import subprocess
import sys

import numpy as np
import pmt
import pytest
from gnuradio import blocks, gr

from gnuradio import rfdetect
from gnuradio.rfdetect.blocks.stft_tile import PyStftTile, native_block
from gnuradio.rfdetect.dsp import compiled_rows
from gnuradio.rfdetect.dsp.spectrogram import (SpectrogramConfigError, SpectrogramEngine, SpectrogramParams,
                                               spectrogram)
from gnuradio.rfdetect.formats.sigmf_io import SigMFRecording

from conftest import RATE, ROOT, SMALL


def _tag(offset, key, value):
    t = gr.tag_t()
    t.offset, t.key, t.value = int(offset), pmt.intern(key), value
    return t


def _noise(n, seed=0):
    rng = np.random.default_rng(seed)
    x = ((rng.standard_normal(n) + 1j * rng.standard_normal(n)) * 0.05).astype(np.complex64)
    x[n // 4:n // 2] += 0.5 * np.exp(2j * np.pi * 0.21 * np.arange(n // 2 - n // 4)).astype(np.complex64)
    return x


def _run(block, x, tags=(), width=SMALL.width):
    tb = gr.top_block()
    src = blocks.vector_source_c(x.tolist(), False, 1, list(tags))
    snk = blocks.vector_sink_f(width)
    tb.connect(src, block, snk)
    tb.run()
    rows = np.array(snk.data(), np.float32).reshape(-1, width)
    tags_out = [(pmt.symbol_to_string(t.key), t.offset, t.value) for t in snk.tags()]
    return rows, sorted(tags_out, key=lambda t: (t[1], t[0]))


def test_stft_tile_on_the_cpu_is_the_cpp_block():
    blk = rfdetect.stft_tile(fft_size=SMALL.fft_size, hop=SMALL.hop, width=SMALL.width, device="cpu")
    assert isinstance(blk, native_block())
    assert isinstance(blk, gr.sync_decimator)
    assert blk.params == SMALL and blk.engine.kernel == "compiled"
    assert (blk.fft_size(), blk.hop(), blk.width()) == (SMALL.fft_size, SMALL.hop, SMALL.width)
    assert blk.threads() == min(2, os.cpu_count())
    assert rfdetect.stft_tile(fft_size=SMALL.fft_size, hop=SMALL.hop, width=SMALL.width, threads=3).threads() == 3


@pytest.mark.parametrize("window,pooling,normalisation", [("hann", "mean", "floor"), ("blackmanharris", "max", "none"),
                                                          ("boxcar", "mean", "none"), ("hamming", "max", "floor")])
@pytest.mark.parametrize("threads", [1, 2])
def test_cpp_block_rows_are_the_kernels_bits(window, pooling, normalisation, threads):
    """The block gets SciPy's taps and bin scale from Python: its rows are the bits of the
    pybind11 kernel, whatever the thread count and however GNU Radio chunks the calls."""
    p = SpectrogramParams(fft_size=SMALL.fft_size, hop=384, window=window, width=256, pooling=pooling,
                          normalisation=normalisation)
    x = _noise(400 * p.hop + 111, seed=threads)
    blk = rfdetect.stft_tile(p.fft_size, p.hop, p.window, p.width, p.pooling, p.normalisation, threads=threads,
                             device="cpu")
    rows, _ = _run(blk, x, width=p.width)
    ref = spectrogram(x, p, SpectrogramEngine(p, threads=1, kernel="compiled"))
    assert rows.shape == ref.shape == (len(x) // p.hop, p.width)
    assert np.array_equal(rows, ref)


def test_cpp_block_rows_equal_the_offline_detect_and_training_paths(recording, tmp_path):
    """One spectrogram function: the rows of `rfdetect detect`'s flowgraph (its STFT Tile
    is the C++ block) are the bits of training's tiles (rfdetect_training.prepare)."""
    from gnuradio.rfdetect.apps.detect_flowgraph import DetectFlowgraph, DetectOptions
    from rfdetect_training.prepare import PrepareOptions, recording_tiles
    fg = DetectFlowgraph(str(recording), DetectOptions(models=["energy"], params=SMALL, tile_height=128,
                                                       overlap=16, out=str(tmp_path / "d.jsonl")))
    assert isinstance(fg.stft, native_block())
    tap = blocks.vector_sink_f(SMALL.width)
    fg.connect(fg.stft, tap)
    fg.run()
    rows = np.array(tap.data(), np.float32).reshape(-1, SMALL.width)
    rec = SigMFRecording.open(recording)
    assert len(rows) == rec.n_samples // SMALL.hop
    n_tiles = 0
    opt = PrepareOptions(params=SMALL, tile_height=128, overlap=16, chunk_samples=77_777)
    for tile, row_start, valid in recording_tiles(rec, opt, SpectrogramEngine(SMALL)):
        tile = np.asarray(tile)
        assert tile.dtype == np.float32
        valid = min(valid, len(rows) - row_start)
        assert np.array_equal(tile[:valid], rows[row_start:row_start + valid])
        n_tiles += 1
    assert n_tiles >= 2


def test_cpp_block_tags_are_the_python_blocks():
    """rfdetect_stft on row 0; rx_time, rx_freq, rx_rate, rfdetect_length moved to their
    rows; rx_time corrected with the rate of an rx_rate on the same sample, else
    samp_rate; other tags dropped. The C++ block and the Python block give the same."""
    x = _noise(120 * SMALL.hop)
    t0 = 1_700_000_000
    tags = [_tag(0, "rfdetect_length", pmt.from_uint64(len(x))),
            _tag(700, "rx_time", pmt.make_tuple(pmt.from_uint64(t0), pmt.from_double(0.75))),
            _tag(9000, "rx_time", pmt.make_tuple(pmt.from_uint64(t0 + 1), pmt.from_double(0.5))),
            _tag(9000, "rx_rate", pmt.from_double(4e6)),  # after rx_time in the list: applied first
            _tag(20000, "rx_freq", pmt.from_double(2.4e9)),
            _tag(30000, "other", pmt.PMT_T)]
    native = rfdetect.stft_tile(fft_size=SMALL.fft_size, hop=SMALL.hop, width=SMALL.width, samp_rate=RATE)
    python = PyStftTile(SMALL, samp_rate=RATE, engine=SpectrogramEngine(SMALL, kernel="compiled"))
    rows_c, tags_c = _run(native, x, tags)
    rows_p, tags_p = _run(python, x, tags)
    assert np.array_equal(rows_c, rows_p)
    assert [(k, o) for k, o, _ in tags_c] == [(k, o) for k, o, _ in tags_p] == [
        ("rfdetect_length", 0), ("rfdetect_stft", 0), ("rx_time", 1), ("rx_rate", 17), ("rx_time", 17),
        ("rx_freq", 39)]
    for (k, _, vc), (_, _, vp) in zip(tags_c, tags_p):
        assert pmt.to_python(vc) == pmt.to_python(vp), k
    times = [pmt.to_python(v) for k, _, v in tags_c if k == "rx_time"]
    # the Python formula (seconds in one double: about 2e-7 s resolution)
    assert times[0] == (t0, pytest.approx(0.75 + (512 - 700) / RATE, abs=1e-6))
    assert times[1] == (t0 + 1, pytest.approx(0.5 + (17 * 512 - 9000) / 4e6, abs=1e-6))
    d = pmt.to_python([v for k, _, v in tags_c if k == "rfdetect_stft"][0])
    assert d.pop("samp_rate") == RATE and SpectrogramParams.from_dict(d) == SMALL
    assert native.samp_rate() == 4e6


def test_bad_parameters_raise_one_named_error():
    with pytest.raises(SpectrogramConfigError, match="fft_size=1000 must be a power of two"):
        rfdetect.stft_tile(fft_size=1000, hop=500)
    native = native_block()
    with pytest.raises(ValueError, match="fft_size=1000 must be a power of two"):
        native(1000, 500)
    with pytest.raises(ValueError, match="width=300"):
        native(1024, 512, "hann", 300)
    with pytest.raises(ValueError, match="window='kaiser'"):
        native(1024, 512, "kaiser")
    with pytest.raises(ValueError, match="window_taps has 5 taps"):
        native(1024, 512, window_taps=[1.0] * 5)


def test_cpp_window_is_scipys():
    """The C++ block's own taps (a C++ user passing none) are SciPy's to float rounding."""
    from gnuradio.rfdetect.dsp.spectrogram import _window
    kernel = compiled_rows.load()
    for name in ("hann", "hamming", "blackman", "blackmanharris", "boxcar"):
        p = SpectrogramParams(fft_size=1024, hop=512, window=name, width=512)
        np.testing.assert_allclose(kernel.window(name, 1024), _window(p), rtol=0, atol=1e-6)


def test_kernel_module_checks_raw_pointer_arguments():
    kernel = compiled_rows.load()
    assert os.path.dirname(kernel.__file__) == os.path.dirname(compiled_rows.__file__)
    w = np.ones(SMALL.fft_size, np.float32)
    with pytest.raises(ValueError, match="fft_size=1024 taps"):
        kernel.StftRows(1024, 512, False, True, -10.0, 50.0, 1.0, w[:10])
    state = kernel.StftRows(1024, 512, False, True, -10.0, 50.0, 1.0 / 1024, w)
    x = np.zeros(4 * SMALL.hop + SMALL.history, np.complex64)
    out = np.empty((4, SMALL.width), np.float32)
    with pytest.raises(ValueError, match="complex64"):
        state.rows(x.astype(np.complex128), 4, SMALL.hop, out)
    with pytest.raises(ValueError, match="need"):
        state.rows(x[:-1], 4, SMALL.hop, out)
    with pytest.raises(ValueError, match="float32"):
        state.rows(x, 4, SMALL.hop, out[:, :100])
    with pytest.raises(ValueError, match="float32"):
        state.rows(x, 4, SMALL.hop, out[::2])
    assert state.rows(x, 4, SMALL.hop, out) == 4


def test_cmake_kernel_module_equals_pips(monkeypatch):
    """Where `make` built the native side (build/cmake): CMake's _stft_rows gives the
    bits of pip's."""
    built = glob.glob(str(ROOT / "build/cmake/test_modules/gnuradio/rfdetect/dsp/_stft_rows*.so"))
    if not built:
        pytest.skip("no CMake build in build/cmake (make native builds it)")
    x = _noise(60 * SMALL.hop + SMALL.history, seed=9)
    pip_rows = SpectrogramEngine(SMALL, threads=1, kernel="compiled").compute(x, 60)
    monkeypatch.setattr(compiled_rows, "_HERE", os.path.dirname(built[0]))
    monkeypatch.setattr(compiled_rows, "_lib", None)
    monkeypatch.setattr(compiled_rows, "_error", None)
    cmake_rows = SpectrogramEngine(SMALL, threads=1, kernel="compiled").compute(x, 60)
    assert compiled_rows._lib.__file__ == built[0]
    assert np.array_equal(cmake_rows, pip_rows)


def test_kernel_module_needs_no_gnu_radio(tmp_path):
    """Training boxes have no GNU Radio: the kernel module loads and computes with
    `gnuradio.gr` made unimportable."""
    code = ("import sys; sys.modules['gnuradio.gr'] = None\n"
            "import numpy as np\n"
            "from gnuradio.rfdetect.dsp.spectrogram import SpectrogramEngine, SpectrogramParams, spectrogram\n"
            "p = SpectrogramParams(fft_size=256, hop=128, width=128)\n"
            "e = SpectrogramEngine(p)\n"
            "assert e.kernel == 'compiled', e.kernel\n"
            "print(spectrogram(np.ones(2048, np.complex64), p, e).shape)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "(16, 128)"
