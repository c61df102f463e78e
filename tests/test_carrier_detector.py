"""The model-free carrier detector (rfdetect.inference.carrier_detector): a keyed tone and a
voice carrier are boxed, a receiver line (a spur over the whole capture, through a gain
step) is not; its own spectrogram and labels; through `rfdetect detect` on a synth
recording, and none on artefact noise."""
import numpy as np
import pytest

from gnuradio.rfdetect.dsp.spectrogram import SpectrogramParams, spectrogram
from gnuradio.rfdetect.formats.records import box_iou, read_jsonl
from gnuradio.rfdetect.inference.carrier_detector import CARRIER_SPECTROGRAM, POWER_TOLERANCE, CarrierDetector, \
    _closed_3x3, \
    _running_mean_down
from gnuradio.rfdetect.inference.model_runtime import ModelError, load_model

from conftest import load_module_from, run_cli

FS = 2e6
P = CARRIER_SPECTROGRAM
N = 1024 * P.hop  # one tile of rows: 1.05 s


def _noise(rng, n):
    return (rng.standard_normal(n) + 1j * rng.standard_normal(n)) / np.sqrt(2)


def _line(n, freq, bin_db, phase=0.0):
    """A line ``bin_db`` over the noise in one bin of the 4096-point FFT."""
    amp = np.sqrt(10 ** (bin_db / 10) / P.fft_size)
    return amp * np.exp(2j * np.pi * freq / FS * np.arange(n) + 1j * phase)


def _row(t):
    return float(P.sample_to_row(t * FS))


def _col(f):
    return float(P.offset_hz_to_column(f, FS))


def _detect(x):
    det = CarrierDetector()
    det.set_sample_rate(FS)
    return det.detect(spectrogram(x.astype(np.complex64), P))


def test_a_keyed_tone_is_boxed_and_a_receiver_line_is_not():
    """A tone keyed on twice (0.10-0.40 s and 0.50-0.80 s, a 100 ms gap) is two `tone`
    boxes two bins wide about its frequency; a spur as strong, on for the whole capture, is
    no box, and neither is a gain step of 6 dB at 0.6 s (it moves the floor and the lines
    alike)."""
    rng = np.random.default_rng(3)
    x = _noise(rng, N)
    tone = _line(N, 300e3 + 100.0, 15.0)
    for t0, t1 in ((0.10, 0.40), (0.50, 0.80)):
        x[int(t0 * FS):int(t1 * FS)] += tone[int(t0 * FS):int(t1 * FS)]
    x += _line(N, -500e3, 15.0, phase=1.0)
    x[int(0.6 * FS):] *= 10 ** (6 / 20)
    found = _detect(x)
    assert len(found) == 2, found
    for b, (t0, t1) in zip(sorted(found, key=lambda b: b.y0), ((0.10, 0.40), (0.50, 0.80))):
        assert b.label == "tone" and 9.0 < b.snr_db < 18.0, b  # 15 dB in its bin; measured 12
        assert abs((b.x0 + b.x1) / 2 - _col(300e3 + 100.0)) < 0.5, b
        assert abs(b.y0 - _row(t0)) < 6 and abs(b.y1 - _row(t1)) < 6, (b, _row(t0), _row(t1))


def _am(rng, n, freq, carrier_bin_db, audio_hz=4500.0):
    """An AM voice carrier: a carrier ``carrier_bin_db`` over the noise in its bin, modulated
    80 % by noise-like audio of 100-``audio_hz`` Hz."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / FS)
    spectrum[(f < 100) | (f > audio_hz)] = 0
    audio = np.fft.irfft(spectrum, n)
    audio = np.clip(audio / (3 * audio.std()), -1, 1)
    return (1 + 0.8 * audio) * _line(n, freq, carrier_bin_db)


def test_an_am_carrier_is_one_box_over_its_band_even_when_on_for_all_the_tile():
    """Two AM voice carriers, one keyed up at 0.2-0.9 s, one on for the whole capture: each
    is one `signal` box over its +-4.5 kHz band (a receiver line has no sidebands)."""
    rng = np.random.default_rng(5)
    x = _noise(rng, N)
    keyed = _am(rng, N, -200e3, 25.0)
    x[int(0.2 * FS):int(0.9 * FS)] += keyed[int(0.2 * FS):int(0.9 * FS)]
    x += _am(rng, N, 400e3, 25.0)
    found = _detect(x)
    assert len(found) == 2, found
    for b in found:
        assert b.label == "signal", b
    keyed_box, always = sorted(found, key=lambda b: b.x0)
    for b, f in ((keyed_box, -200e3), (always, 400e3)):
        lo, hi = (float(P.column_to_offset_hz(c, FS)) - f for c in (b.x0, b.x1))
        assert -6e3 < lo < -3e3 and 3e3 < hi < 6e3, (lo, hi)  # +-4.5 kHz, and the 3-bin smoothing
    assert abs(keyed_box.y0 - _row(0.2)) < 6 and abs(keyed_box.y1 - _row(0.9)) < 6, keyed_box
    assert always.y0 <= 1 and always.y1 >= 1023, always


def test_a_drifting_carrier_is_one_box_over_the_band_it_crossed():
    """An AM voice carrier drifting 15 kHz up over the capture (an oscillator warming up) and a
    tone keyed on at 0.2-0.7 s drifting 3.75 kHz down: each is one box from where it started to
    where it ended (the boxes of `rfdetect synth`'s drift), not pieces of one column each."""
    rng = np.random.default_rng(11)
    x = _noise(rng, N)
    t = np.arange(N) / FS
    am = _am(rng, N, 0.0, 25.0)
    x += am * np.exp(2j * np.pi * (-200e3 * t + 0.5 * (15e3 / (N / FS)) * t ** 2))
    tone = _line(N, 0.0, 18.0) * np.exp(2j * np.pi * (300e3 * t - 0.5 * 7.5e3 * t ** 2))
    x[int(0.2 * FS):int(0.7 * FS)] += tone[int(0.2 * FS):int(0.7 * FS)]
    found = sorted(_detect(x), key=lambda b: b.x0)
    assert [b.label for b in found] == ["signal", "tone"], found
    voice, keyed = found
    lo, hi = (float(P.column_to_offset_hz(c, FS)) for c in (voice.x0, voice.x1))
    assert -207e3 < lo < -203e3 and 218e3 - 400e3 < hi < 222e3 - 400e3, (lo, hi)  # -200 kHz -4.5 .. +15 +4.5
    assert voice.y0 <= 1 and voice.y1 >= 1023, voice
    lo, hi = (float(P.column_to_offset_hz(c, FS)) for c in (keyed.x0, keyed.x1))
    assert 300e3 - 7.5e3 * 0.7 - 1e3 < lo < 300e3 - 7.5e3 * 0.7 and 300e3 - 7.5e3 * 0.2 < hi < 300e3 - 7.5e3 * 0.2 + 1e3, \
        (lo, hi)
    # noise over 2 dB in the rows after the key-up can hold the run on for a few rows
    assert abs(keyed.y0 - _row(0.2)) < 8 and abs(keyed.y1 - _row(0.7)) < 8, keyed


def test_a_drifting_tone_keyed_twice_is_two_boxes():
    """A tone drifting 15 kHz over the capture, keyed on at 0.1-0.4 s and 0.6-0.9 s: two boxes,
    one per keying, each over the band it crossed (each keying is a region of its own on the
    same line, and gives only its own run)."""
    rng = np.random.default_rng(12)
    x = _noise(rng, N)
    t = np.arange(N) / FS
    tone = _line(N, 0.0, 18.0) * np.exp(2j * np.pi * (-300e3 * t + 0.5 * 15e3 * t ** 2))
    for t0, t1 in ((0.1, 0.4), (0.6, 0.9)):
        x[int(t0 * FS):int(t1 * FS)] += tone[int(t0 * FS):int(t1 * FS)]
    found = sorted(_detect(x), key=lambda b: b.y0)
    assert [b.label for b in found] == ["tone", "tone"], found
    for b, (t0, t1) in zip(found, ((0.1, 0.4), (0.6, 0.9))):
        lo, hi = (float(P.column_to_offset_hz(c, FS)) for c in (b.x0, b.x1))
        assert -300e3 + 15e3 * t0 - 1e3 < lo < -300e3 + 15e3 * t0 + 1e3, (lo, t0)
        assert -300e3 + 15e3 * t1 - 1e3 < hi < -300e3 + 15e3 * t1 + 1e3, (hi, t1)
        assert abs(b.y0 - _row(t0)) < 8 and abs(b.y1 - _row(t1)) < 8, b


def test_noise_alone_gives_nothing():
    rng = np.random.default_rng(9)
    assert _detect(_noise(rng, N)) == []


def test_runs_only_on_its_own_spectrogram_and_keeps_the_labels_asked_for():
    with pytest.raises(ModelError, match="fft 4096, hop 2048, width 4096, normalisation none"):
        load_model("carrier", SpectrogramParams(), 1024)
    with pytest.raises(ModelError, match=r"reports 'signal', 'tone'; labels \['pulse'\] are not among them"):
        load_model("carrier?labels=tone|pulse", P, 1024)
    with pytest.raises(ModelError, match="fft 4096, hop 2048.*these rows differ \\(fft_size: 1024 != 4096"):
        load_model("carrier", SpectrogramParams(fft_size=1024, hop=512, width=1024, normalisation="none"), 1024)
    with pytest.raises(ModelError, match="tiles of at least 128 rows \\(tile height 64\\)"):
        load_model("carrier", P, 64)
    assert load_model("carrier", P, 1024).labels == ["signal", "tone"]
    tones = load_model("carrier?labels=tone", P, 1024)
    assert tones.labels == ["tone"]
    rng = np.random.default_rng(5)
    x = _noise(rng, N) + _am(rng, N, 400e3, 25.0)
    x[int(0.2 * FS):int(0.5 * FS)] += _line(N, 100e3, 15.0)[int(0.2 * FS):int(0.5 * FS)]
    tile = spectrogram(x.astype(np.complex64), P)
    assert sorted(b.label for b in load_model("carrier", P, 1024).detect(tile)) == ["signal", "tone"]
    assert [b.label for b in tones.detect(tile)] == ["tone"]


def test_rfdetect_detect_boxes_the_voice_carriers_of_synth_recordings(tmp_path):
    """`rfdetect detect REC --model carrier` on four vhf-uhf recordings of NBFM and AM voice at
    10-25 dB, with the profile's receiver artefacts (fading, spurs, a gain step...): records in
    seconds and Hz, and most of the transmissions boxed at IoU 0.5."""
    from gnuradio.rfdetect.apps.synth import synth_dataset
    from gnuradio.rfdetect.formats.sigmf_io import SigMFRecording
    from rfdetect_training.evaluate import truth_records
    hits, truth = 0, []
    for meta in synth_dataset(tmp_path, n=4, seed=CARRIER_SEED, sample_rate=FS, duration=1.0, snr_db=(10.0, 25.0),
                              n_signals=6, profile="vhf-uhf", classes=["nbfm", "am"], center_freq=160e6):
        out = tmp_path / "d.jsonl"
        run_cli("detect", meta, "--model", "carrier", "--out", out, "--quiet")
        recs = [r for r in read_jsonl(out) if r["event"] in ("new", "update")]
        assert {r["label"] for r in recs} <= {"signal", "tone"}
        these = [t for t in truth_records(SigMFRecording.open(meta)) if t["label"] in ("nbfm", "am")]
        hits += sum(any(box_iou(t, r) >= 0.5 for r in recs) for t in these)
        truth += these
    assert len(truth) >= 16 and hits >= CARRIER_FLOOR * len(truth), (hits, len(truth))


# Measured (session 33): seed 4601, recordings 0-3: 6, 4, 5 and 5 of 6 NBFM and AM
# transmissions boxed (20 of 24). The floor leaves room for another CPU's rounding.
CARRIER_SEED, CARRIER_FLOOR = 4601, 0.7


def test_no_carrier_on_noise_with_receiver_lines(tmp_path):
    """A DC spike, spurs and LO leakage are lines over the whole capture, and a gain step
    moves them with the floor: `rfdetect detect --model carrier` reports nothing (the DC
    zone is the Detector's, as for any model)."""
    from gnuradio.rfdetect.apps.synth import synth_dataset
    out = tmp_path / "d.jsonl"
    for seed in (106, 107):
        [rec] = synth_dataset(tmp_path, n=1, seed=seed, sample_rate=FS, duration=1.0, n_signals=0, profile="vhf-uhf",
                              artefacts=("dc", "spurs", "lo_leak", "agc"), center_freq=160e6)
        run_cli("detect", rec, "--model", "carrier", "--out", out, "--quiet")
        assert [r for r in read_jsonl(out) if r["event"] in ("new", "update")] == [], seed


def test_a_line_between_two_bins_is_centred_between_them():
    """The peak's offset from its bin: a parabola through the log power where all three bins
    hold power over the noise; where one holds none, the centroid (a line half in each of two
    bins leaves the third empty: its centre is their common edge)."""
    from gnuradio.rfdetect.inference.postprocess import peak_offset
    assert peak_offset(np.array([0.0, 1.0, 1.0])) == pytest.approx(0.5)
    assert peak_offset(np.array([1.0, 1.0, -0.1])) == pytest.approx(-0.5)
    assert peak_offset(np.array([1.0, 4.0, 1.0])) == pytest.approx(0.0)
    assert 0.0 < peak_offset(np.array([1.0, 4.0, 2.0])) < 0.5


def test_a_nan_pixel_does_not_hide_a_tone():
    """A non-finite pixel reads as no power: it neither blanks its row's floor nor spreads
    down its column."""
    rng = np.random.default_rng(3)
    x = _noise(rng, N)
    x[int(0.1 * FS):int(0.4 * FS)] += _line(N, 300e3 + 100.0, 15.0)[int(0.1 * FS):int(0.4 * FS)]
    tile = spectrogram(x.astype(np.complex64), P)
    tile[500, 3000] = np.nan
    tile[200, int(_col(300e3))] = np.inf
    det = CarrierDetector()
    det.set_sample_rate(FS)
    found = det.detect(tile)
    assert len(found) == 1 and found[0].label == "tone", found
    assert abs((found[0].x0 + found[0].x1) / 2 - _col(300e3 + 100.0)) < 0.5, found


@pytest.mark.parametrize("shape", [(1024, 4096), (129, 300), (7, 9), (2, 3), (1, 5)])
def test_the_fast_filters_give_scipys_pixels(shape):
    """The 8-row running mean and the 3 x 3 closing (rewritten for speed on 4096-wide tiles):
    the very values of scipy.ndimage's uniform_filter1d down the rows and binary_closing."""
    import scipy.ndimage as ndi
    x = np.random.default_rng(shape[0]).random(shape, dtype=np.float32) ** 3 * 1e3
    # the detector's 8 rows, and sizes whose division is exact in any order (SciPy versions differ in it)
    for size in (8, 4, 2, 1):
        assert np.array_equal(_running_mean_down(x, size), ndi.uniform_filter1d(x, size, axis=0, mode="nearest"))
    mask = x > np.median(x)  # half the pixels, in no pattern: gaps to close, edges to erode
    closed = _closed_3x3(mask)
    assert np.array_equal(closed, ndi.binary_closing(mask, structure=np.ones((3, 3), bool)))
    if min(shape) >= 3:  # a smaller tile is all edge: both erode it to nothing
        assert closed.any() and not closed.all()



def _kernel():
    from gnuradio.rfdetect.inference.carrier_detector import KERNEL
    return KERNEL.load()


@pytest.mark.parametrize("rows,width,smooth_rows", [(1024, 4096, 8), (300, 257, 8), (129, 300, 5), (20, 9, 16),
                                                    (7, 3, 8), (9, 2, 8), (2, 1, 1), (1, 5, 3), (1, 1, 8)])
def test_compiled_power_maps_are_numpys_to_float32_rounding(rows, width, smooth_rows):
    """The kernel (gr-rfdetect/lib/carrier_power.cc) against the NumPy and SciPy reference:
    noise with a gain step, a keyed line, equal pixels (ties in the median) and silent
    samples (-300 dB, next to zero power), on tiles of every edge case of the running means
    (fewer rows or columns than the windows)."""
    rng = np.random.default_rng(rows * 7 + width)
    tile = (10 * np.log10(rng.exponential(1.0, (rows, width))) + 20).astype(np.float32)
    tile[rows // 2:] += 3.0
    tile[rows // 4: rows // 2 + 1, width // 3] = 45.0
    tile[:, -1:] = tile[:, :1]  # equal pixels in every row
    if width >= 4:
        tile[0, :width // 2] = -300.0
    if rows >= 3:  # under float32's normal numbers: the kernel's powf path
        tile[1, :1] = -400.0
        tile[2, :1] = -1000.0
    det = CarrierDetector(kernel="numpy", smooth_rows=smooth_rows)
    want = det._power_numpy(tile)
    got = _kernel().power(tile, smooth_rows)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == np.float32
        # atol: the -400 and -1000 dB pixels are subnormal over their row's floor, where an ulp is
        # not a relative 2e-6
        np.testing.assert_allclose(g, w, rtol=POWER_TOLERANCE, atol=np.finfo(np.float32).tiny)


def test_compiled_ten_to_the_tenth_is_within_an_ulp_or_two_of_exact():
    """The kernel's 10 ** (dB / 10) (its own exp2, not powf), -370 dB to 380 dB in steps of
    0.0137 dB (outside that the values take powf): read off a one-row tile, whose power map is
    each value over the row's floor, the kernel's values over the exact ones of the float32
    dB / 10 are one constant (1 / floor) to 4 ulps (each value within an ulp or two, and the
    division's rounding), and never decreasing."""
    db = np.arange(-370.0, 380.0, 0.0137, dtype=np.float64).astype(np.float32)
    exact = 10.0 ** (db / np.float32(10.0)).astype(np.float64)
    power, _ = _kernel().power(np.ascontiguousarray(db[None, :]), 1)
    normal = power[0] >= np.finfo(np.float32).tiny
    assert normal.sum() > len(db) - 10
    ratio = power[0][normal].astype(np.float64) / exact[normal]
    assert ratio.max() / ratio.min() - 1 < 4 * 2.0 ** -23, ratio.max() / ratio.min() - 1
    assert np.all(np.diff(power[0][normal]) >= 0)


def test_compiled_regions_are_scipys_labels_and_boxes():
    """The kernel's candidate regions (mask over the level outside the edge columns, 3 x 3
    closing, 8-connected labels, boxes of those tall enough) against the NumPy and SciPy
    reference: the same label array, numbered the same, and the same boxes, on maps of
    every size down to 1 x 1, at densities from sparse dots to nearly full, with edge
    columns 1 to a third of the map and min_rows 0 to more than the map has."""
    kernel = _kernel()
    rng = np.random.default_rng(17)
    compared = tall = 0
    for rows, width in [(1024, 4096), (300, 257), (64, 64), (5, 40), (3, 3), (2, 7), (1, 1), (9, 2)]:
        for density in (0.02, 0.2, 0.5, 0.9):
            # blobs and diagonal strokes, so that regions join only through corners
            x = rng.random((rows, width), dtype=np.float32)
            x = np.where(x < density, np.float32(4.0), np.float32(0.5))
            for min_rows, edge_fraction in ((0, 0.0), (20, 0.05), (3, 0.34), (rows + 1, 0.05)):
                det = CarrierDetector(kernel="numpy", min_rows=min_rows, edge_fraction=edge_fraction)
                want_labels, want = det._regions_numpy(x.copy())
                labels, got = kernel.regions(x, det._level(), det._edge_columns(width), min_rows)
                assert labels.dtype == np.int32
                np.testing.assert_array_equal(labels, want_labels)
                assert got == [(i, ys.start, ys.stop, xs.start, xs.stop) for i, ys, xs in want]
                compared += 1
                tall += len(want)
    assert compared == 8 * 4 * 4 and tall > 100


def test_kernel_regions_check_their_arguments():
    kernel = _kernel()
    smooth = np.ones((200, 64), np.float32)
    with pytest.raises(ValueError, match="float32"):
        kernel.regions(smooth.astype(np.float64), 2.0, 1, 20)
    with pytest.raises(ValueError, match="contiguous"):
        kernel.regions(smooth[:, ::2], 2.0, 1, 20)
    with pytest.raises(ValueError, match="rows and columns"):
        kernel.regions(np.empty((0, 64), np.float32), 2.0, 1, 20)
    with pytest.raises(ValueError, match="edge and min_rows"):
        kernel.regions(smooth, 2.0, -1, 20)


def _boxes_agree(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert (g.y0, g.y1, g.label, g.snr_db) == (w.y0, w.y1, w.label, w.snr_db), (g, w)
        assert abs(g.x0 - w.x0) < 1e-3 and abs(g.x1 - w.x1) < 1e-3 and abs(g.score - w.score) < 1e-5, (g, w)


def test_compiled_power_gives_numpys_boxes_on_voice_and_tone_recordings(tmp_path):
    """On vhf-uhf recordings of NBFM, AM and keyed tones with the profile's receiver
    artefacts, `carrier` with the kernel reports the boxes it reports with NumPy (rows and
    labels equal; band edges and scores to float rounding)."""
    from gnuradio.rfdetect.apps.synth import synth_dataset
    from gnuradio.rfdetect.formats.sigmf_io import SigMFRecording
    compiled, numpy_ = CarrierDetector(kernel="compiled"), CarrierDetector(kernel="numpy")
    boxes = 0
    for meta in synth_dataset(tmp_path, n=2, seed=CARRIER_SEED, sample_rate=FS, duration=1.1, snr_db=(5.0, 25.0),
                              n_signals=6, profile="vhf-uhf", classes=["nbfm", "am", "tone"], center_freq=160e6):
        rec = SigMFRecording.open(meta)
        tile = spectrogram(rec.read(0, rec.n_samples), P)[:1024]
        for det in (compiled, numpy_):
            det.set_sample_rate(FS)
        want = numpy_.detect(tile)
        _boxes_agree(compiled.detect(tile), want)
        boxes += len(want)
    assert boxes >= 4


def test_tiles_over_the_kernels_range_go_to_numpy(monkeypatch):
    """A tile with a pixel at KERNEL_MAX_DB or more goes to NumPy's path, any other to the
    kernel (a stand-in for it here records which tiles it is given)."""
    from gnuradio.rfdetect.inference import carrier_detector

    given = []

    class Recording:
        def power(self, tile, smooth_rows):
            given.append(float(tile.max()))
            return carrier_detector.KERNEL.load().power(tile, smooth_rows)
    det = CarrierDetector(kernel="compiled")
    monkeypatch.setattr(carrier_detector.KERNEL, "choose", lambda choice: Recording())
    tile = np.full((200, 64), 10.0, np.float32)
    tile[50:150, 20] = carrier_detector.KERNEL_MAX_DB
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(det._power(tile)[1], det._power_numpy(tile)[1])
    assert given == []
    tile[50:150, 20] = carrier_detector.KERNEL_MAX_DB - 1
    np.testing.assert_allclose(det._power(tile)[0], det._power_numpy(tile)[0], rtol=POWER_TOLERANCE)
    assert given == [carrier_detector.KERNEL_MAX_DB - 1]


def test_kernel_module_checks_its_arguments():
    kernel = _kernel()
    tile = np.zeros((200, 64), np.float32)
    with pytest.raises(ValueError, match="float32"):
        kernel.power(tile.astype(np.float64), 8)
    with pytest.raises(ValueError, match="2-D"):
        kernel.power(tile.ravel(), 8)
    with pytest.raises(ValueError, match="contiguous"):
        kernel.power(tile[::2], 8)
    with pytest.raises(ValueError, match="smooth_rows"):
        kernel.power(tile, 0)
    with pytest.raises(ValueError, match="rows and columns"):
        kernel.power(np.empty((0, 64), np.float32), 8)


def test_a_missing_kernel_is_named_once_and_numpy_takes_over(tmp_path, monkeypatch, caplog):
    import logging

    from gnuradio.rfdetect.dsp.compiled_modules import NativeUnavailable
    from gnuradio.rfdetect.inference import carrier_detector
    load_module_from(monkeypatch, carrier_detector.KERNEL, tmp_path)  # an install without the .so
    caplog.set_level(logging.WARNING, "rfdetect.carrier")
    det = CarrierDetector()
    tile = np.random.default_rng(3).random((300, 128), dtype=np.float32) * 10
    tile[50:250, 60] = 40.0  # a carrier: one region
    for _ in range(2):
        got = det._power(tile)
        labels, regions = det._regions(got[1])
    want = det._power_numpy(tile)
    np.testing.assert_array_equal(got[1], want[1])
    want_labels, want_regions = det._regions_numpy(want[1])
    np.testing.assert_array_equal(labels, want_labels)
    assert regions == want_regions and len(regions) == 1
    assert caplog.text.count("computes its power maps and regions with NumPy") == 1
    assert "pybind11-dev" in caplog.text
    with pytest.raises(NativeUnavailable, match="is not in"):
        CarrierDetector(kernel="compiled")
    with pytest.raises(carrier_detector.CarrierConfigError, match="auto, compiled or numpy"):
        CarrierDetector(kernel="fast")


def test_kernel_releases_the_gil():
    """While the main thread is inside the kernel, a Python thread ticking every millisecond
    goes on: the longest gap between its ticks is far below the calls' length."""
    import time

    from conftest import longest_wait_during
    kernel = _kernel()
    tile = np.random.default_rng(5).random((1024, 4096), dtype=np.float32) * 10

    def calls():
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 0.3:
            kernel.regions(kernel.power(tile, 8)[1], 2.0, 1, 20)
    longest, length = longest_wait_during(calls)
    assert length >= 0.3
    assert longest < 0.5 * length, (longest, length)
