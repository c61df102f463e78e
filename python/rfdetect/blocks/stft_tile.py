"""STFT Tile block: complex64 samples in, normalised spectrogram rows out.

:func:`stft_tile` is the public block (``rfdetect.stft_tile(...)``, the GRC YAML's make
line). On the CPU it gives the C++ block (gr-rfdetect/lib/stft_tile_impl.cc, bound as
``gnuradio.rfdetect.rfdetect_python.stft_tile``): no Python in its work(), so GNU Radio's
default buffers are enough. Where a GPU passes the start-up check (device auto/cuda) it
gives :class:`PyStftTile`, this file's Python block, with the CuPy/cuFFT engine
(rfdetect.dsp.spectrogram_gpu); no C++ cuFFT path was built (docs/architecture.md says
why). Where the C++ block was not built (a pip-only install) the Python block runs on
the CPU too, said once in the log.
"""
import logging
import threading

import numpy as np
import pmt
from gnuradio import gr

from .messages import to_pmt
from ..dsp.spectrogram import SpectrogramConfigError, SpectrogramEngine, SpectrogramParams
from ..dsp.spectrogram_gpu import make_spectrogram_engine

STFT_TAG = "rfdetect_stft"
# Rows per call the Python block asks room for: enough to amortise the Python call.
_ROWS_PER_CALL = 128
_OUTPUT_ROWS = 8 * _ROWS_PER_CALL
_FORWARDED = ("rx_time", "rx_freq", "rx_rate", "rfdetect_length")
_MAX_THREADS = 64  # MAX_THREADS of gr-rfdetect/lib/stft_tile_impl.cc
_native_lock = threading.Lock()
_native_said = False


def _gr_say(level, msg):
    (gr.log.warn if level >= logging.WARNING else gr.log.info)(f"rfdetect STFT Tile: {msg}")


def native_block():
    """The C++ block's class (``rfdetect_python.stft_tile``), or None where CMake did not
    build it (said once)."""
    global _native_said
    try:
        from .. import rfdetect_python
        return rfdetect_python.stft_tile
    except ImportError as e:
        with _native_lock:
            if not _native_said:
                _native_said = True
                _gr_say(logging.WARNING, f"the C++ STFT Tile is not built here ({e}; CMake builds it, "
                        "`make test` puts it into .venv): the Python block runs, slower with small buffers")
        return None


class stft_tile:
    """Computes spectrogram rows: one row of ``width`` float32 values per ``hop``
    input samples (see rfdetect.dsp.spectrogram for the exact math; the offline
    ``rfdetect detect`` path and training use the very same kernel).

    Output: a vector stream of ``width`` float32 in [0, 1] (with the default
    normalisation), lowest frequency first, so any GNU Radio raster or waterfall sink
    can show it.

    Returns the C++ block on the CPU (its rows are the bits of the pybind11 kernel that
    training and ``rfdetect detect`` use: it gets the same SciPy window taps), the
    Python block :class:`PyStftTile` on a GPU. Either has ``.params`` (the
    :class:`SpectrogramParams`) and ``.engine``: the running engine for the Python
    block; for the C++ block, a CPU :class:`SpectrogramEngine` with its kernel, taps and
    threads, which makes the same rows from Python.

    Tags out: ``rfdetect_stft`` on row 0 (a dict of the spectrogram parameters, which
    the Detector checks against its models' cards, plus ``samp_rate`` when set); ``rx_time``, ``rx_freq``,
    ``rx_rate`` and ``rfdetect_length`` moved to the row holding their sample, with
    ``rx_time`` corrected to that row's first new sample so that time stays exact.

    Args:
        fft_size: FFT length (power of two).
        hop: samples between rows (fft_size/2 = 50% overlap).
        window: hann, hamming, blackman, blackmanharris or boxcar.
        width: output bins; fft_size/width adjacent bins are pooled.
        pooling: "mean" or "max" of the pooled bins' power.
        normalisation: "running_floor" (the default: dB above the noise floor, [db_low,
            db_high] mapped to [0, 1], with a floor that a signal over most of the band
            cannot lift: rfdetect.dsp.spectrogram), "floor" (dB above each row's own
            noise floor) or "none" (plain dB). Must be the models' cards'.
        db_low, db_high: the dB range mapped to [0, 1].
        samp_rate: used to correct rx_time until an rx_rate tag arrives, and passed to
            the Detector (whose own samp_rate is 0 by default).
        threads: CPU threads for the rows (0: up to 2).
        device: "auto" (the GPU through CuPy/cuFFT when one is visible, else the CPU),
            "cpu", "cuda" or "cuda:N" (the CPU, with a warning once, where there is no
            GPU). At start a test frame's GPU rows are compared with the CPU kernel's,
            and the CPU is used, with a warning, when they differ (rfdetect.dsp.spectrogram_gpu;
            not yet executed on a GPU).

    Bad parameters (threads < 0 and samp_rate < 0 too) raise ValueError
    (SpectrogramConfigError) naming each problem, before any block is made.

    A class only so that ``stft_tile.__init__`` shows the block's signature to GRC's
    checks and to ``help()``: ``stft_tile(...)`` returns the C++ or the Python block,
    never an instance of this class.
    """

    def __new__(cls, fft_size=4096, hop=2048, window="hann", width=1024, pooling="mean", normalisation="running_floor",
                db_low=-10.0, db_high=50.0, samp_rate=0.0, threads=0, device="auto"):
        return _make_stft_tile(fft_size, hop, window, width, pooling, normalisation, db_low, db_high, samp_rate,
                               threads, device)

    def __init__(self, fft_size=4096, hop=2048, window="hann", width=1024, pooling="mean", normalisation="running_floor",
                 db_low=-10.0, db_high=50.0, samp_rate=0.0, threads=0, device="auto"):
        pass  # never runs: __new__ returns a block of another class


def _make_stft_tile(fft_size, hop, window, width, pooling, normalisation, db_low, db_high, samp_rate, threads,
                    device):
    p = SpectrogramParams(int(fft_size), int(hop), window, int(width), pooling, normalisation,
                          float(db_low), float(db_high))
    # the block's own parameters, named as the C++ block names them (same limits)
    if not 0 <= int(threads) <= _MAX_THREADS:
        raise SpectrogramConfigError(f"threads={threads} must be between 0 (up to 2) and {_MAX_THREADS}")
    if not float(samp_rate) >= 0:
        raise SpectrogramConfigError(f"samp_rate={samp_rate} must be >= 0 (0: unknown)")
    n_threads = int(threads) or None
    if str(device or "auto").strip().lower() == "cpu":
        engine = SpectrogramEngine(p, threads=n_threads)
    else:
        engine = make_spectrogram_engine(p, device, threads=n_threads, say=_gr_say)
    native = native_block() if type(engine) is SpectrogramEngine else None
    if native is None:
        return PyStftTile(p, samp_rate=samp_rate, engine=engine)
    blk = native(p.fft_size, p.hop, p.window, p.width, p.pooling, p.normalisation, p.db_low, p.db_high,
                 float(samp_rate), int(threads), window_taps=engine.window.tolist(), bin_scale=engine._bin_scale)
    blk.params = p
    blk.engine = engine
    return blk


class PyStftTile(gr.decim_block):
    """The STFT Tile in Python, for the GPU engine (and the CPU where the C++ block was
    not built): the rows of ``engine`` (see rfdetect.dsp.spectrogram for the exact math).

    Output: a vector stream of ``width`` float32 in [0, 1] (with the default
    normalisation), lowest frequency first, so any GNU Radio raster or waterfall sink
    can show it.

    Speed: the block before this one needs a large output buffer
    (``set_min_output_buffer(1 << 21)``; the SigMF Source sets it): with GNU Radio's
    default, a source that refills in small steps hands this block a few rows per call.
    ``engine.kernel`` says which CPU kernel runs where the CPU runs.

    Tags out: ``rfdetect_stft`` on row 0 (a dict of the spectrogram parameters, which
    the Detector checks against its models' cards, plus ``samp_rate`` when set); ``rx_time``, ``rx_freq``,
    ``rx_rate`` and ``rfdetect_length`` moved to the row holding their sample, with
    ``rx_time`` corrected to that row's first new sample so that time stays exact.

    Args: ``params`` (SpectrogramParams), ``samp_rate`` and ``engine`` (what
    :func:`rfdetect.dsp.spectrogram_gpu.make_spectrogram_engine` chose), as
    :func:`stft_tile` makes them.
    """

    def __init__(self, params, samp_rate=0.0, engine=None):
        self.params = params
        p = self.params
        gr.decim_block.__init__(self, name="rfdetect STFT Tile", in_sig=[np.complex64],
                                out_sig=[(np.float32, p.width)], decim=p.hop)
        # A long history does not delay anything (frames start after it); it makes
        # GNU Radio give the upstream buffer room for _ROWS_PER_CALL rows per call.
        self._skip = _ROWS_PER_CALL * p.hop
        self.set_history(self._skip + p.history + 1)
        # Room for several calls' rows: with only two calls' worth, work() was handed
        # 128 rows at a time; with 1024 rows it gets more per call and GNU Radio's fixed
        # cost between calls is paid less often (bench/stft.py compares 256 and 1024 rows).
        self.set_min_output_buffer(_OUTPUT_ROWS)
        self.set_tag_propagation_policy(gr.TPP_DONT)
        self.engine = engine if engine is not None else SpectrogramEngine(p)
        self._floor = self.engine.new_floor_state() if p.normalisation == "running_floor" else None
        self.samp_rate = float(samp_rate)

    def work(self, input_items, output_items):
        out = output_items[0]
        n = len(out)
        x = input_items[0][self._skip:]
        self.engine.compute(x, n, out, floor_state=self._floor)
        self._forward_tags(n)
        return n

    def _forward_tags(self, n):
        hop = self.params.hop
        row0 = self.nitems_written(0)
        if row0 == 0:
            d = self.params.to_dict()
            if self.samp_rate > 0:  # the Detector's sample rate when it has none of its own
                d["samp_rate"] = self.samp_rate
            self.add_item_tag(0, 0, pmt.intern(STFT_TAG), to_pmt(d))
        start = self.nitems_read(0)
        tags = sorted(self.get_tags_in_range(0, start, start + n * hop),
                      key=lambda t: (t.offset, pmt.symbol_to_string(t.key) != "rx_rate"))
        for tag in tags:
            key = pmt.symbol_to_string(tag.key)
            if key not in _FORWARDED:
                continue
            row = tag.offset // hop
            value = tag.value
            if key == "rx_rate":
                self.samp_rate = pmt.to_double(value)
            elif key == "rx_time" and self.samp_rate > 0:
                secs = pmt.to_uint64(pmt.tuple_ref(value, 0)) + pmt.to_double(pmt.tuple_ref(value, 1))
                if secs > 0:
                    t = secs + (row * hop - tag.offset) / self.samp_rate
                    whole = int(t)
                    value = pmt.make_tuple(pmt.from_uint64(whole), pmt.from_double(t - whole))
            self.add_item_tag(0, row, tag.key, value)
