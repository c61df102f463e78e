"""The Detector never hangs: errors on its worker end the flowgraph with one clear
message, or (when they belong to one tile) are counted and survived."""
import threading
import time

import numpy as np
import pytest

from gnuradio.rfdetect.inference.tile_detector import DetectorFailed, TileDetector
from gnuradio.rfdetect.inference.model_runtime import EnergyModel

from conftest import RATE, SMALL, TILE

_RUN_DEADLINE_S = 60.0


def _run_with_deadline(tb):
    """tb.run() on a thread; fails the test (instead of hanging it) after the deadline."""
    t = threading.Thread(target=tb.run, daemon=True)
    t.start()
    t.join(_RUN_DEADLINE_S)
    if t.is_alive():
        tb.stop()
        pytest.fail(f"the flowgraph did not end within {_RUN_DEADLINE_S} s: the Detector hangs")


def _noise(seconds=0.2):
    rng = np.random.default_rng(0)
    n = int(seconds * RATE)
    return ((rng.standard_normal(n) + 1j * rng.standard_normal(n)) * 0.1).astype(np.complex64)


def _flowgraph(det, stft_rate=0.0):
    from gnuradio import blocks, gr

    from gnuradio import rfdetect
    tb = gr.top_block()
    src = blocks.vector_source_c(_noise().tolist(), False)
    stft = rfdetect.stft_tile(fft_size=SMALL.fft_size, hop=SMALL.hop, width=SMALL.width, device="cpu",
                              samp_rate=stft_rate)
    tb.connect(src, stft, det)
    tb.python_blocks = (stft, det)
    return tb


@pytest.mark.parametrize("mode", ["file", "realtime"])
def test_no_sample_rate_anywhere_ends_the_flowgraph_with_a_clear_error(mode):
    from gnuradio import rfdetect
    det = rfdetect.detector(models=["energy"], samp_rate=0, width=SMALL.width, mode=mode, **TILE)
    _run_with_deadline(_flowgraph(det))
    assert det.error is not None and "no sample rate" in det.error and "samp_rate" in det.error


def test_detector_takes_the_stft_tiles_sample_rate():
    from gnuradio import rfdetect
    det = rfdetect.detector(models=["energy"], width=SMALL.width, **TILE)  # samp_rate: default 0
    _run_with_deadline(_flowgraph(det, stft_rate=RATE))
    assert det.error is None
    assert det.engine.ref.sample_rate == RATE
    assert det.stats()["tiles_done"] >= 2


def test_an_error_on_the_worker_ends_the_flowgraph_with_its_message():
    from gnuradio import rfdetect
    det = rfdetect.detector(models=["energy"], samp_rate=RATE, width=SMALL.width, **TILE)
    det.configure(SMALL)

    def broken(*a, **k):
        raise ZeroDivisionError("boom in to_records")
    det.engine.to_records = broken
    _run_with_deadline(_flowgraph(det))
    assert det.error is not None and "ZeroDivisionError" in det.error and "boom in to_records" in det.error


def test_a_tile_that_cannot_be_written_is_counted_and_the_stream_goes_on(tmp_path):
    from gnuradio import rfdetect
    tiles = tmp_path / "tiles"
    tiles.mkdir()
    (tiles / "tile_000001.png").mkdir()  # a directory where the tile should go: writing it fails
    det = rfdetect.detector(models=["energy"], samp_rate=RATE, width=SMALL.width, tile_dir=str(tiles), **TILE)
    _run_with_deadline(_flowgraph(det))
    st = det.stats()
    assert det.error is None
    assert st["tile_write_errors"] == 1 and "tile_000001.png" in st["last_tile_write_error"]
    written = sorted(p.name for p in tiles.glob("tile_*.png") if p.is_file())
    assert written and "tile_000000.png" in written and "tile_000002.png" in written
    assert not list(tiles.glob(".*.tmp")), "a half-written tile was left behind"


def _engine(**kw):
    return TileDetector([EnergyModel(SMALL)], SMALL, sample_rate=RATE, **{**TILE, **kw})


def test_finish_has_a_deadline_when_the_worker_is_stuck():
    release = threading.Event()
    eng = _engine(queue_size=1)
    model = eng.models[0]
    fast = model.detect
    model.detect = lambda tile: (release.wait(30), fast(tile))[1]  # a model stuck for 30 s
    eng.push_rows(np.zeros((TILE["tile_height"] * 2, SMALL.width), np.float32))
    t = threading.Thread(target=eng.finish, kwargs={"timeout": 1.0}, daemon=True)
    t.start()
    t.join(10)
    stuck = t.is_alive()
    release.set()
    eng.stop()
    assert not stuck, "finish() waited past its deadline"


def test_push_rows_raises_once_the_worker_has_died():
    eng = _engine(queue_size=1)

    def broken(*a, **k):
        raise RuntimeError("worker bug")
    eng.tile_info = broken
    rows = np.zeros((TILE["tile_height"], SMALL.width), np.float32)
    with pytest.raises(DetectorFailed, match="worker bug"):
        for _ in range(50):  # the queue holds one tile: a dead worker is noticed within a few
            eng.push_rows(rows)
    eng.stop()


def test_a_zero_rx_rate_tag_is_ignored_not_divided_by():
    eng = _engine()
    eng.set_reference(0, sample_rate=0.0)
    eng.push_rows(np.zeros((TILE["tile_height"], SMALL.width), np.float32))
    assert eng.finish(timeout=10)
    assert eng.ref.sample_rate == RATE
    eng.stop()


def test_a_hung_model_stops_file_mode_after_the_stall_deadline():
    release = threading.Event()
    eng = _engine(queue_size=1, stall_timeout_s=1.0)
    model = eng.models[0]
    fast = model.detect
    model.detect = lambda tile: (release.wait(30), fast(tile))[1]  # a model stuck for 30 s
    rows = np.zeros((TILE["tile_height"], SMALL.width), np.float32)
    t0 = time.monotonic()
    try:
        with pytest.raises(DetectorFailed, match="not finished a tile"):
            for _ in range(10):  # the queue holds one tile: the third push waits, then gives up
                eng.push_rows(rows)
        assert time.monotonic() - t0 < 10
    finally:
        release.set()
        eng.stop()
