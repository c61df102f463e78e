"""The one spectrogram function: block rows == offline rows == training rows."""
import numpy as np
import pytest
from gnuradio import blocks, gr

from gnuradio import rfdetect
from gnuradio.rfdetect.sigmf_io import SigMFRecording
from gnuradio.rfdetect.spectrogram import (SpectrogramConfigError, SpectrogramParams, StreamingSpectrogram,
                                           spectrogram)

from conftest import SMALL


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

    from gnuradio.rfdetect.spectrogram import SpectrogramEngine
    from gnuradio.rfdetect.spectrogram_gpu import ROW_TOLERANCE, make_spectrogram_engine
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
