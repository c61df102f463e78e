"""The native side (gr-rfdetect/): the C++ STFT Tile against the pybind11 kernel that
training and the offline detect path use, its tags against the Python block's, its
errors; the kernel module itself. Real flowgraphs, small sizes (conftest.SMALL)."""
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
                                                          ("boxcar", "mean", "none"), ("hamming", "max", "floor"),
                                                          ("hann", "mean", "running_floor")])
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


def _padded_rows(x, p):
    """The row convention written out: fft_size-hop zeros, then the stream; len(x)//hop rows."""
    n_rows = len(x) // p.hop
    padded = np.concatenate([np.zeros(p.history, np.complex64), x])
    return SpectrogramEngine(p, threads=1, kernel="compiled").compute(padded, n_rows)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("rows_per_call", ["one", "default", "thousands"])
def test_cpp_block_rows_whatever_the_call_size(threads, rows_per_call):
    """Row 0 is the frame of fft_size-hop zeros and the first hop samples (GNU Radio's
    initial history), a partial hop at the end gives no row, and the rows do not depend on
    how many rows work() is handed: one per call, GNU Radio's default buffers (aligned
    batches, then the 3000 % 256 rows left at the end: alignment, unlike an output
    multiple, must not drop them), or thousands split over the threads."""
    p = SpectrogramParams(fft_size=SMALL.fft_size, hop=256, width=256)
    x = _noise(3000 * p.hop + p.hop - 1, seed=5)
    x[:p.hop] += 2.0  # row 0 sees these and the zeros before them, nothing else
    blk = rfdetect.stft_tile(fft_size=p.fft_size, hop=p.hop, width=p.width, threads=threads, device="cpu")
    tb = gr.top_block()
    src = blocks.vector_source_c(x.tolist(), False)
    snk = blocks.vector_sink_f(p.width)
    assert blk.alignment() == 256  # 65536 samples of hop 256, at most a quarter of 1024 rows
    if rows_per_call == "one":
        blk.set_alignment(1)  # otherwise the scheduler lifts max_noutput_items to the alignment
        blk.set_max_noutput_items(1)
    elif rows_per_call == "thousands":  # the whole stream in the source's buffer, room for all rows after the block
        src.set_min_output_buffer(len(x))
        blk.set_min_output_buffer(4096)
    tb.connect(src, blk, snk)
    tb.run()
    rows = np.array(snk.data(), np.float32).reshape(-1, p.width)
    ref = _padded_rows(x, p)
    assert rows.shape == ref.shape == (3000, p.width)
    assert np.array_equal(rows[0], ref[0]) and np.array_equal(rows, ref)
    # row 0 is not the row of the first fft_size samples without the zeros
    assert not np.array_equal(ref[0], SpectrogramEngine(p, threads=1).compute(x, 1)[0])


def test_cpp_block_stops_cleanly_mid_stream():
    """A never-ending flowgraph with 2 row threads: stop() and wait() return, it starts
    again, and a top block dropped while running is torn down; each within a deadline."""
    code = ("import sys, time\n"
            "from gnuradio import analog, blocks, gr, rfdetect\n"
            "def graph():\n"
            "    tb = gr.top_block()\n"
            "    src = analog.noise_source_c(analog.GR_GAUSSIAN, 1.0, 7)\n"
            "    stft = rfdetect.stft_tile(fft_size=1024, hop=256, width=256, threads=2, device='cpu')\n"
            "    snk = blocks.null_sink(256 * 4)\n"
            "    src.set_min_output_buffer(1 << 16)\n"  # many rows per call: the helpers work
            "    tb.connect(src, stft, snk)\n"
            "    return tb, stft\n"
            "tb, stft = graph()\n"
            "for _ in range(3):\n"
            "    tb.start(); time.sleep(0.3); tb.stop(); tb.wait()\n"
            "    assert stft.nitems_written(0) > 0\n"
            "tb2, _ = graph()\n"
            "tb2.start(); time.sleep(0.3)\n"
            "del tb2\n"
            "print('ok')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "ok"  # after GNU Radio's log lines


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
    x = _noise(120 * SMALL.hop + 300)  # a partial hop at the end: no row, its tags dropped
    t0 = 1_700_000_000
    tags = [_tag(0, "rfdetect_length", pmt.from_uint64(len(x))),
            _tag(700, "rx_time", pmt.make_tuple(pmt.from_uint64(t0), pmt.from_double(0.75))),
            _tag(9000, "rx_time", pmt.make_tuple(pmt.from_uint64(t0 + 1), pmt.from_double(0.5))),
            _tag(9000, "rx_rate", pmt.from_double(4e6)),  # after rx_time in the list: applied first
            _tag(20000, "rx_freq", pmt.from_double(2.4e9)),
            _tag(30000, "other", pmt.PMT_T),
            _tag(50 * SMALL.hop, "rx_time", pmt.make_tuple(pmt.from_uint64(t0 + 2), pmt.from_double(0.0))),
            _tag(120 * SMALL.hop + 10, "rx_freq", pmt.from_double(1e9))]
    native = rfdetect.stft_tile(fft_size=SMALL.fft_size, hop=SMALL.hop, width=SMALL.width, samp_rate=RATE)
    python = PyStftTile(SMALL, samp_rate=RATE, engine=SpectrogramEngine(SMALL, kernel="compiled"))
    rows_c, tags_c = _run(native, x, tags)
    rows_p, tags_p = _run(python, x, tags)
    assert np.array_equal(rows_c, rows_p)
    assert [(k, o) for k, o, _ in tags_c] == [(k, o) for k, o, _ in tags_p] == [
        ("rfdetect_length", 0), ("rfdetect_stft", 0), ("rx_time", 1), ("rx_rate", 17), ("rx_time", 17),
        ("rx_freq", 39), ("rx_time", 50)]
    for (k, _, vc), (_, _, vp) in zip(tags_c, tags_p):
        assert pmt.to_python(vc) == pmt.to_python(vp), k
    times = [pmt.to_python(v) for k, _, v in tags_c if k == "rx_time"]
    # the Python formula (seconds in one double: about 2e-7 s resolution)
    assert times[0] == (t0, pytest.approx(0.75 + (512 - 700) / RATE, abs=1e-6))
    assert times[1] == (t0 + 1, pytest.approx(0.5 + (17 * 512 - 9000) / 4e6, abs=1e-6))
    assert times[2] == (t0 + 2, 0.0)  # on the row's first new sample: unchanged
    d = pmt.to_python([v for k, _, v in tags_c if k == "rfdetect_stft"][0])
    assert d.pop("samp_rate") == RATE and SpectrogramParams.from_dict(d) == SMALL
    assert native.samp_rate() == 4e6


_BAD = [(dict(fft_size=1000, hop=500), "fft_size=1000 must be a power of two"),
        (dict(hop=5000), "hop=5000 must be between 1 and fft_size=4096"),
        (dict(hop=0), "hop=0 must be between 1"),
        (dict(width=300), "width=300 must divide fft_size=4096"),
        (dict(width=16), "width=16 must divide fft_size=4096 and be >= 32"),
        (dict(window="kaiser"), "window='kaiser' is not one of"),
        (dict(pooling="median"), "pooling='median' is not one of"),
        (dict(normalisation="peak"), "normalisation='peak' is not one of"),
        (dict(db_low=50.0, db_high=50.0), "db_high=50(.0)? must exceed db_low=50"),
        (dict(db_low=60.0, db_high=50.0), "db_high=50(.0)? must exceed db_low=60"),
        (dict(threads=-1), "threads=-1 must be between 0"),
        (dict(samp_rate=-1.0), "samp_rate=-1(.0+)? must be >= 0")]


@pytest.mark.parametrize("kwargs,message", _BAD, ids=[m.split()[0] for _, m in _BAD])
def test_bad_parameters_raise_one_named_error(kwargs, message):
    """Each bad parameter: one ValueError naming it, from rfdetect.stft_tile (before any
    block is made) and from the C++ block's own constructor."""
    with pytest.raises(SpectrogramConfigError, match=message):
        rfdetect.stft_tile(**kwargs)
    with pytest.raises(ValueError, match=message):
        native_block()(**kwargs)


def test_bad_parameters_all_named_at_once():
    with pytest.raises(ValueError, match="fft_size=1000.*window='kaiser'.*pooling='median'"):
        native_block()(fft_size=1000, window="kaiser", pooling="median")
    with pytest.raises(ValueError, match="window_taps has 5 taps"):
        native_block()(1024, 512, window_taps=[1.0] * 5)


def test_malformed_rx_tags_pass_through_the_cpp_block():
    """An rx_rate or rx_time of another shape than UHD's is forwarded as it came (no
    exception in work(), which would end the flowgraph); the stream goes on."""
    x = _noise(40 * SMALL.hop)
    tags = [_tag(600, "rx_rate", pmt.intern("fast")), _tag(700, "rx_time", pmt.from_double(3.5)),
            _tag(900, "rx_time", pmt.make_tuple(pmt.from_double(1.0), pmt.intern("x")))]
    blk = rfdetect.stft_tile(fft_size=SMALL.fft_size, hop=SMALL.hop, width=SMALL.width, samp_rate=RATE)
    rows, tags_out = _run(blk, x, tags)
    assert len(rows) == 40
    moved = [(k, o, v) for k, o, v in tags_out if k in ("rx_rate", "rx_time")]
    assert [(k, o) for k, o, _ in moved] == [("rx_rate", 1), ("rx_time", 1), ("rx_time", 1)]
    assert all(any(pmt.equal(v, t.value) for t in tags) for _, _, v in moved)  # as they came
    assert blk.samp_rate() == RATE


def test_rows_are_planned_single_threaded_whatever_fftw_was_told():
    """GNU Radio's fft_vcc with nthreads=2 leaves FFTW's planner at 2 threads, process-wide;
    a row plan made after it split every FFT over threads (the C++ STFT Tile fell from
    about 120 to 16 MS/s in bench/stft.py). FFTW's own hook counts its parallel loops: the
    rows made after the count was set to 2 run none, keep their bits, and the caller's
    count is left as it was."""
    import ctypes
    from gnuradio import fft
    from gnuradio.fft import window

    threads_lib = ctypes.CDLL("libfftw3f_threads.so.3")
    if not hasattr(threads_lib, "fftwf_threads_set_callback"):
        pytest.skip("FFTW < 3.3.9: no parallel-loop hook to count with")
    p = SpectrogramParams(fft_size=4096, hop=2048, width=1024)
    x = _noise(64 * p.hop + p.history, seed=9)
    before = SpectrogramEngine(p, threads=1, kernel="compiled").compute(x, 64)

    loops = []
    JOB = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p)
    LOOP = ctypes.CFUNCTYPE(None, JOB, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_void_p)

    @LOOP
    def serial_loop(work, jobdata, elsize, njobs, data):  # FFTW's jobs, one after another
        loops.append(njobs)
        for i in range(njobs):
            work(jobdata + i * elsize)

    try:
        fft.fft_vcc(4096, True, window.hann(4096), True, 2)  # what a user's flowgraph may hold
        assert threads_lib.fftwf_planner_nthreads() == 2
        threads_lib.fftwf_threads_set_callback(serial_loop, None)
        # a threaded plan of this size does run its loop through the hook (the test can fail)
        lib = ctypes.CDLL("libfftw3f.so.3")
        lib.fftwf_malloc.restype = ctypes.c_void_p
        lib.fftwf_plan_dft_1d.restype = ctypes.c_void_p
        lib.fftwf_plan_dft_1d.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_uint]
        buf = lib.fftwf_malloc(8 * 4096 * 2)
        plan = lib.fftwf_plan_dft_1d(4096, buf, buf + 8 * 4096, -1, 1 << 6)  # FFTW_ESTIMATE
        lib.fftwf_execute(ctypes.c_void_p(plan))
        threaded_loops = len(loops)
        lib.fftwf_destroy_plan(ctypes.c_void_p(plan))
        lib.fftwf_free(ctypes.c_void_p(buf))
        del loops[:]

        engine = SpectrogramEngine(p, threads=1, kernel="compiled")
        after = engine.compute(x, 64)
        block_rows, _ = _run(rfdetect.stft_tile(fft_size=4096, hop=2048, width=1024, threads=1, device="cpu"),
                             x, width=1024)
        assert threads_lib.fftwf_planner_nthreads() == 2  # the caller's count, restored
    finally:
        threads_lib.fftwf_threads_set_callback(ctypes.c_void_p(0), None)  # FFTW's own threads again
        threads_lib.fftwf_plan_with_nthreads(1)
    assert threaded_loops > 0, "FFTW did not split a 4096-point plan at 2 threads: this test shows nothing"
    assert loops == []
    # the block's row r is the offline row r-1: its stream starts with fft_size-hop zeros
    assert np.array_equal(after, before) and np.array_equal(block_rows[1:65], before)


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
    with pytest.raises(ValueError, match="need more samples"):
        state.rows(x, 4, 2 ** 62, out)  # n_rows*hop overflows: refused, not read past x
    with pytest.raises(ValueError, match="n_rows"):
        state.rows(x, -1, SMALL.hop, out)
    with pytest.raises(ValueError, match="float32"):
        state.rows(x, 4, SMALL.hop, np.empty((4, SMALL.width), np.float64))
    readonly = out.copy()
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match="writable"):
        state.rows(x, 4, SMALL.hop, readonly)
    assert state.rows(x, 4, SMALL.hop, out) == 4
    counter = kernel.RowCounter()
    assert state.rows_shared(x, 4, SMALL.hop, out, counter, 2 ** 62) == 4  # a chunk past the end
    assert state.rows_shared(x, 4, SMALL.hop, out, counter, 1) == 0  # the counter is spent


def test_kernel_module_releases_the_gil():
    """While the main thread is inside StftRows.rows (about a second of rows), a Python
    thread ticking every millisecond goes on: the longest gap between its ticks during
    the call is far below the call's length (holding the GIL, it would be all of it)."""
    from conftest import longest_wait_during
    kernel = compiled_rows.load()
    n_rows, fft = 200_000, 1024
    state = kernel.StftRows(fft, 32, False, True, -10.0, 50.0, 1.0 / fft, np.hanning(fft).astype(np.float32))
    x = _noise(n_rows + fft)
    out = np.empty((n_rows, 32), np.float32)
    longest, length = longest_wait_during(lambda: state.rows(x, n_rows, 1, out))  # hop 1: a long call, a small array
    assert length > 0.2, length
    assert longest < 0.5 * length, (longest, length)


def _install_tool():
    import importlib.util
    spec = importlib.util.spec_from_file_location("install_block_module",
                                                  ROOT / "gr-rfdetect/tools/install_block_module.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_make_native_clears_an_uninstalls_leftover_and_records_the_module(tmp_path):
    """`make native`'s copy of the block module is in pip's RECORD (so an uninstall takes
    it), and a leftover folder without __init__.py (which hides an editable install's
    package as a namespace package) is cleared; a real package folder is left alone."""
    tool = _install_tool()
    stale = tmp_path / "gnuradio" / "rfdetect"
    (stale / "models" / "default").mkdir(parents=True)
    (stale / "rfdetect_python.cpython-311-x86_64-linux-gnu.so").write_bytes(b"\0")
    tool.clear_leftover(str(tmp_path))
    assert not stale.exists()
    stale.mkdir(parents=True)
    (stale / "__init__.py").write_text("")
    (stale / "rfdetect_python.so").write_bytes(b"\0")
    tool.clear_leftover(str(tmp_path))
    assert (stale / "rfdetect_python.so").exists()
    record = tmp_path / "gr_rfdetect-0.1.0.dist-info" / "RECORD"
    record.parent.mkdir()
    record.write_text("gnuradio/rfdetect/__init__.py,sha256=x,0\n")
    for _ in range(2):
        tool.add_to_record(str(tmp_path), str(stale / "rfdetect_python.so"))
    assert record.read_text().splitlines() == ["gnuradio/rfdetect/__init__.py,sha256=x,0",
                                               "gnuradio/rfdetect/rfdetect_python.so,,"]
