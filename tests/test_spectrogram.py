"""The one spectrogram function: block rows == offline rows == training rows."""
import numpy as np
import pytest
from gnuradio import blocks, gr

from gnuradio import rfdetect
from gnuradio.rfdetect.formats.sigmf_io import SigMFRecording
from gnuradio.rfdetect.dsp.spectrogram import (SpectrogramConfigError, SpectrogramParams, StreamingSpectrogram,
                                           spectrogram)

from conftest import SMALL, load_module_from


def block_rows(path, p):
    tb = gr.top_block()
    src = rfdetect.sigmf_source(str(path))
    stft = rfdetect.stft_tile(fft_size=p.fft_size, hop=p.hop, width=p.width)
    snk = blocks.vector_sink_f(p.width)
    tb.connect(src, stft, snk)
    tb.run()
    return np.array(snk.data(), dtype=np.float32).reshape(-1, p.width), snk.tags()


def test_block_rows_equal_offline_rows(recording):
    rec = SigMFRecording.open(recording)
    offline = spectrogram(rec.read(0, rec.n_samples), SMALL)
    rows, tags = block_rows(recording, SMALL)
    assert rows.shape == offline.shape == (rec.n_samples // SMALL.hop, SMALL.width)
    # FFTW may round the last bit differently for a frame's position in a batch
    assert np.max(np.abs(rows - offline)) <= 1e-5
    keys = {str(t.key) for t in tags}
    assert {"rfdetect_stft", "rx_time", "rx_freq", "rx_rate", "rfdetect_length"} <= keys


def test_default_constructor_and_chunking_do_not_change_rows():
    blk = rfdetect.stft_tile(fft_size=4096, hop=2048)
    assert blk.params == SpectrogramParams()
    x = (np.random.default_rng(0).standard_normal(40000) * (1 + 1j)).astype(np.complex64)
    whole = spectrogram(x, SMALL)
    s = StreamingSpectrogram(SMALL)
    parts = np.concatenate([s.push(x[i:i + 3333]) for i in range(0, len(x), 3333)])
    assert parts.shape == whole.shape and np.max(np.abs(parts - whole)) <= 1e-5


def test_frequency_axis_and_time_geometry():
    p = SMALL
    fs = 2e6
    n = np.arange(200 * p.hop)
    f_tone = 0.25 * fs
    x = (np.exp(2j * np.pi * f_tone * n / fs) + 0.01 * np.random.default_rng(1).standard_normal(len(n))).astype(np.complex64)
    x[: 100 * p.hop] *= 0  # tone starts at sample 100*hop
    rows = spectrogram(x, p)
    col = int(np.argmax(rows[150]))
    f_col = float(p.column_to_offset_hz(col + 0.5, fs))
    assert abs(f_col - f_tone) <= fs / p.width  # positive frequencies right of centre
    on = np.flatnonzero(rows[:, col] > 0.5)
    # the first row whose frame centre is past the onset
    assert abs(p.row_to_sample(on[0]) - 100 * p.hop) <= p.hop


def test_bad_parameters_are_named():
    with pytest.raises(SpectrogramConfigError, match="fft_size=1000"):
        SpectrogramParams(fft_size=1000)
    with pytest.raises(SpectrogramConfigError, match="width=300"):
        SpectrogramParams(width=300)


def test_stft_tile_asked_for_a_gpu_without_one_says_so_once_and_matches_the_cpu(recording, caplog):
    """No GPU here: the block falls back to the CPU engine; on a GPU machine the same
    test compares cuFFT rows with the CPU's (rfdetect.spectrogram_gpu.ROW_TOLERANCE)."""
    import logging

    from gnuradio.rfdetect.dsp.spectrogram import SpectrogramEngine
    from gnuradio.rfdetect.dsp.spectrogram_gpu import ROW_TOLERANCE, make_spectrogram_engine
    caplog.set_level(logging.INFO, "rfdetect.stft")
    engines = [make_spectrogram_engine(SMALL, "cuda:0") for _ in range(3)]
    on_gpu = type(engines[0]) is not SpectrogramEngine
    if not on_gpu:
        assert caplog.text.count("STFT on the CPU: no GPU for it here") == 1
    with pytest.raises(ValueError, match="device='tpu'"):
        make_spectrogram_engine(SMALL, "tpu")
    iq = SigMFRecording.open(recording).read(0, 200_000)
    tb = gr.top_block()
    src = blocks.vector_source_c(iq.tolist(), False)
    stft = rfdetect.stft_tile(fft_size=SMALL.fft_size, hop=SMALL.hop, width=SMALL.width, device="cuda")
    sink = blocks.vector_sink_f(SMALL.width)
    tb.connect(src, stft, sink)
    tb.run()
    rows = np.array(sink.data(), np.float32).reshape(-1, SMALL.width)
    ref = spectrogram(iq, SMALL)
    assert rows.shape == ref.shape
    tol = ROW_TOLERANCE if on_gpu else 1e-6
    assert np.abs(rows - ref).max() <= tol


def _noisy_with_signals(p, n_rows, seed):
    rng = np.random.default_rng(seed)
    n = n_rows * p.hop + p.history
    x = (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(np.complex64)
    t = np.arange(n)
    x[n // 8:n // 3] += 300 * np.exp(2j * np.pi * 0.13 * t[n // 8:n // 3])  # a strong tone
    x[n // 2:n // 2 + 3 * p.fft_size] = 0  # silent frames: the 1e-30 power floor
    x[-2 * p.fft_size:] *= 1e4  # loud wideband
    return x


@pytest.mark.parametrize("window", ["hann", "hamming", "blackman", "blackmanharris", "boxcar"])
@pytest.mark.parametrize("pooling", ["mean", "max"])
@pytest.mark.parametrize("normalisation", ["floor", "running_floor", "none"])
@pytest.mark.parametrize("fft_size,width", [(1024, 256), (256, 128), (64, 64), (512, 32), (2048, 256)])
def test_compiled_kernel_equals_numpy_reference(window, pooling, normalisation, fft_size, width):
    """The C++ row kernel (gr-rfdetect/lib/stft_rows.cc) against rows_from_spectrum (the reference) for every setting; pool
    sizes 4, 2, 1 and 8 take the unrolled pooling loops, 16 the generic one."""
    from gnuradio.rfdetect.dsp.spectrogram import KERNEL_TOLERANCE, SpectrogramEngine
    p = SpectrogramParams(fft_size=fft_size, hop=fft_size // 2, window=window, width=width, pooling=pooling,
                          normalisation=normalisation)
    n_rows = 60
    x = _noisy_with_signals(p, n_rows, fft_size + width)
    fast = SpectrogramEngine(p, kernel="compiled").compute(x, n_rows)
    ref = SpectrogramEngine(p, kernel="numpy").compute(x, n_rows)
    assert np.isfinite(fast).all()
    if normalisation != "none":
        assert np.abs(fast - ref).max() <= KERNEL_TOLERANCE
    else:  # plain dB, down to -300 (the power floor)
        np.testing.assert_allclose(fast, ref, rtol=0, atol=KERNEL_TOLERANCE * (p.db_high - p.db_low))
        assert fast.min() == pytest.approx(-300.0, abs=1e-3)


def test_compiled_kernel_is_installed_and_the_default():
    """CI installs with make: the fast path must be what the tests exercise."""
    from gnuradio.rfdetect.dsp.spectrogram import SpectrogramEngine
    assert SpectrogramEngine(SMALL).kernel == "compiled"
    assert rfdetect.stft_tile(fft_size=SMALL.fft_size, hop=SMALL.hop, width=SMALL.width).engine.kernel == "compiled"
    with pytest.raises(SpectrogramConfigError, match="kernel='fast'"):
        SpectrogramEngine(SMALL, kernel="fast")


def test_compiled_rows_do_not_depend_on_chunks_or_threads():
    """Each row is computed on its own, so any split gives the very same bits."""
    from gnuradio.rfdetect.dsp.spectrogram import SpectrogramEngine
    x = _noisy_with_signals(SMALL, 300, 5)
    one = SpectrogramEngine(SMALL, threads=1).compute(x, 300)
    three = SpectrogramEngine(SMALL, threads=3).compute(x, 300)
    assert np.array_equal(one, three)
    s = StreamingSpectrogram(SMALL, SpectrogramEngine(SMALL, threads=2))
    parts = np.concatenate([s.push(x[i:i + 7777]) for i in range(0, len(x), 7777)])
    whole = spectrogram(x, SMALL, SpectrogramEngine(SMALL, threads=1), chunk_rows=1000)
    assert parts.shape == whole.shape and np.array_equal(parts, whole)


def test_compiled_kernel_checks_what_it_is_given():
    """The C side works on raw pointers: every shape it relies on is checked first."""
    from gnuradio.rfdetect.dsp.spectrogram import SpectrogramEngine
    eng = SpectrogramEngine(SMALL, threads=1)
    state = eng._parts[0]
    x = np.zeros(SMALL.hop * 4 + SMALL.history, np.complex64)
    out = np.empty((4, SMALL.width), np.float32)
    with pytest.raises(ValueError, match="contiguous complex64"):
        state.rows(x.astype(np.complex128), 4, out)
    with pytest.raises(ValueError, match="at least 4 rows"):
        state.rows(x, 4, out[:3])
    with pytest.raises(ValueError, match="need"):
        state.rows(x[:-1], 4, out)
    eng.close()
    with pytest.raises(RuntimeError, match="closed"):
        state.rows(x, 4, out)


def test_engines_made_in_parallel_threads_agree():
    """FFTW's planner is not thread-safe: the kernel plans under a lock."""
    from concurrent.futures import ThreadPoolExecutor

    from gnuradio.rfdetect.dsp.spectrogram import SpectrogramEngine
    x = _noisy_with_signals(SMALL, 40, 6)
    with ThreadPoolExecutor(8) as pool:
        rows = list(pool.map(lambda _: SpectrogramEngine(SMALL, threads=1).compute(x, 40), range(16)))
    assert all(np.array_equal(r, rows[0]) for r in rows)


def test_nan_samples_read_as_silence_in_the_compiled_kernel():
    """A NaN frame (a misbehaving live source; the SigMF Source refuses NaN files) gives
    a flat, finite row (what an all-zero frame gives) instead of NaN reaching the models."""
    import dataclasses
    from gnuradio.rfdetect.dsp.spectrogram import SpectrogramEngine
    x = _noisy_with_signals(SMALL, 20, 7)
    bad = x.copy()
    bad[5 * SMALL.hop + 3] = np.nan
    hit = [r for r in range(20) if r * SMALL.hop <= 5 * SMALL.hop + 3 < r * SMALL.hop + SMALL.fft_size]
    for norm in ("floor", "running_floor"):
        p = dataclasses.replace(SMALL, normalisation=norm)
        clean = SpectrogramEngine(p).compute(x, 20)
        rows = SpectrogramEngine(p).compute(bad, 20)
        assert np.isfinite(rows).all()
        assert hit and all(np.ptp(rows[r]) == 0.0 and np.ptp(clean[r]) > 0.1 for r in hit)
        # floor: every other row is untouched; running_floor: the rows before it (later
        # ones are normalised by a history without the silent rows)
        others = [r for r in range(20) if r not in hit and (norm == "floor" or r < hit[0])]
        assert others and np.array_equal(rows[others], clean[others])


def test_a_missing_kernel_is_named_and_numpy_takes_over(tmp_path, monkeypatch, caplog):
    import logging

    import importlib

    from gnuradio.rfdetect.dsp import compiled_rows
    spec_mod = importlib.import_module("gnuradio.rfdetect.dsp.spectrogram")
    load_module_from(monkeypatch, compiled_rows.KERNEL, tmp_path)  # an install without the .so
    monkeypatch.setattr(spec_mod, "_said", set())
    with pytest.raises(compiled_rows.KernelUnavailable, match="libfftw3-dev"):
        spec_mod.SpectrogramEngine(SMALL, kernel="compiled")
    caplog.set_level(logging.WARNING, "rfdetect.stft")
    engines = [spec_mod.SpectrogramEngine(SMALL) for _ in range(2)]
    assert [e.kernel for e in engines] == ["numpy", "numpy"]
    assert caplog.text.count("spectrogram rows with NumPy") == 1
    (tmp_path / "_stft_rows.so").write_bytes(b"not a shared object")
    monkeypatch.setattr(compiled_rows.KERNEL, "error", None)
    with pytest.raises(compiled_rows.KernelUnavailable, match="does not load"):
        compiled_rows.load()


# ------------------------------------------------------------------ running_floor
def _band_filling_bursts(p, n_rows, rows, snr_db, frac=0.85, seed=3):
    """Unit-power noise; in each [r0, r1) of ``rows``, noise filling ``frac`` of the band
    at ``snr_db`` per bin above it (a Wi-Fi channel in a 20 MS/s capture)."""
    rng = np.random.default_rng(seed)
    n = n_rows * p.hop
    x = (rng.standard_normal(n) + 1j * rng.standard_normal(n)) * np.sqrt(0.5)
    spec = np.fft.fft((rng.standard_normal(n) + 1j * rng.standard_normal(n)))
    f = np.fft.fftfreq(n)
    spec[np.abs(f) > frac / 2] = 0
    wide = np.fft.ifft(spec) * np.sqrt(10 ** (snr_db / 10) / frac)
    for r0, r1 in rows:
        x[r0 * p.hop:r1 * p.hop] += wide[r0 * p.hop:r1 * p.hop]
    return x.astype(np.complex64)


def _db(p, v):
    return np.asarray(p.db_above_floor(v))


@pytest.mark.parametrize("kernel", ["compiled", "numpy"])
def test_running_floor_keeps_a_band_filling_burst_above_the_floor_and_its_gaps_dark(kernel):
    """Under "floor" a burst over 85 % of the band is the row's floor: it reads 0 dB and
    the gap between two bursts 3 rows apart is as bright as they are. Under
    "running_floor" the bursts read their SNR and the gap reads noise."""
    from gnuradio.rfdetect.dsp.spectrogram import SpectrogramEngine
    p = SpectrogramParams(fft_size=1024, hop=512, width=256, normalisation="running_floor")
    x = _band_filling_bursts(p, 600, [(300, 330), (333, 360)], snr_db=15.0)
    centre = slice(64, 192)  # inside the burst's band
    for norm in ("floor", "running_floor"):
        q = SpectrogramParams(fft_size=1024, hop=512, width=256, normalisation=norm)
        rows = spectrogram(x, q, SpectrogramEngine(q, kernel=kernel))
        burst = np.median(_db(q, rows[305:328, centre]))
        noise = np.median(_db(q, rows[100:280, centre]))
        gap = _db(q, rows[330:333, centre].mean(axis=1)).min()
        assert abs(noise - 0.0) < 1.5, (norm, noise)  # noise rows: both say 0 dB
        if norm == "floor":
            assert abs(burst) < 1.5 and gap > burst - 3.0, (burst, gap)
        else:
            assert 12.0 < burst < 18.0, burst
            assert gap < 4.0, gap  # the 3-row gap's quietest row is near the noise


@pytest.mark.parametrize("kernel", ["compiled", "numpy"])
def test_running_floor_follows_a_receiver_gain_step_in_the_same_row(kernel):
    """A gain step moves every column group, the quiet ones too: the floor moves with it
    at once, up or down, so noise after the step reads 0 dB from its first full row."""
    from gnuradio.rfdetect.dsp.spectrogram import SpectrogramEngine
    p = SpectrogramParams(fft_size=1024, hop=512, width=256, normalisation="running_floor")
    rng = np.random.default_rng(9)
    n = 900 * p.hop
    x = ((rng.standard_normal(n) + 1j * rng.standard_normal(n)) * np.sqrt(0.5)).astype(np.complex64)
    x[300 * p.hop:600 * p.hop] *= np.float32(10 ** (12 / 20))  # +12 dB, then back
    rows = spectrogram(x, p, SpectrogramEngine(p, kernel=kernel))
    q = SpectrogramParams(fft_size=1024, hop=512, width=256, normalisation="floor")  # each row on its own
    own = spectrogram(x, q, SpectrogramEngine(q, kernel=kernel))
    level, own_level = np.median(_db(p, rows), axis=1), np.median(_db(q, own), axis=1)
    for r in (100, 302, 450, 602, 800):  # 302, 602: the first rows wholly after each step
        assert abs(level[r] - own_level[r]) < 0.5 and abs(level[r]) < 2.0, (r, level[r], own_level[r])


def test_running_floor_rows_do_not_depend_on_chunks():
    """The floor's state is the stream's: rows come out the same however the samples
    are cut (across the 256 rows it tracks, too)."""
    p = SpectrogramParams(fft_size=1024, hop=512, width=256, normalisation="running_floor")
    x = _band_filling_bursts(p, 700, [(40, 80), (300, 420), (500, 503)], snr_db=20.0)
    whole = spectrogram(x, p)
    s = StreamingSpectrogram(p)
    cuts = np.sort(np.random.default_rng(4).integers(0, len(x), 25))
    parts = [s.push(c) for c in np.split(x, cuts)]
    assert np.array_equal(np.concatenate(parts), whole)


def test_numpy_and_compiled_running_floor_states_are_the_same_math():
    """The NumPy state (the reference, used by the NumPy and GPU engines) and the C++ one
    (the compiled engine's and the C++ block's) on the same plain-dB rows and floors."""
    from gnuradio.rfdetect.dsp.compiled_rows import load
    from gnuradio.rfdetect.dsp.spectrogram import RunningFloor
    p = SpectrogramParams(fft_size=1024, hop=512, width=64, normalisation="running_floor")
    rng = np.random.default_rng(2)
    rows = (rng.standard_normal((700, 64)) * 5 - 30).astype(np.float32)
    floors = np.stack([rng.normal(-30, 0.3, 700), rng.normal(-32, 0.3, 700)], axis=1).astype(np.float32)
    floors[200:260, 0] += 15  # a band-filling burst lifts the row floor, not the quietest group
    floors[400:, :] += 8  # a gain step lifts both
    a, b = rows.copy(), rows.copy()
    ref, fast = RunningFloor(p), load().RunningFloor(p.width, p.db_low, p.db_high)
    for lo, hi in ((0, 1), (1, 250), (250, 700)):
        ref.normalise(a[lo:hi], floors[lo:hi])
        fast.normalise(b[lo:hi], floors[lo:hi])
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    # the burst rows were normalised by the tracked floor (quietest group + its usual spread)
    expect = np.clip((rows[230] - (floors[230, 1] + 2.0 + 1.0) - p.db_low) / (p.db_high - p.db_low), 0, 1)
    assert np.abs(a[230] - expect).max() < 0.5 / (p.db_high - p.db_low)  # within 0.5 dB


def test_running_floor_is_named_among_the_normalisations():
    with pytest.raises(SpectrogramConfigError, match="running_floor"):
        SpectrogramParams(normalisation="tracked")
