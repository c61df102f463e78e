"""A real flowgraph for the tests of real-time policy and of time and frequency truth:
vector source (with stream tags) -> STFT Tile -> Detector (energy model) -> NMS Merge ->
Track Assigner -> JSONL Sink, the tile messages at the end of the chain also kept by
a Message Debug block."""
import time

import numpy as np
import pmt

from gnuradio.rfdetect.blocks.messages import from_pmt
from gnuradio.rfdetect.formats.records import read_jsonl, validate_record

from conftest import RATE, SMALL, TILE
from test_detector_errors import _run_with_deadline


def tag(offset: int, key: str, value):
    from gnuradio import gr
    t = gr.tag_t()
    t.offset, t.key, t.value = int(offset), pmt.intern(key), value
    return t


def rx_time(unix: float):
    """An rx_time tag value as UHD and the SigMF Source make it: (uint64 s, double fraction)."""
    whole = int(unix)
    return pmt.make_tuple(pmt.from_uint64(whole), pmt.from_double(unix - whole))


def noise(n: int, seed: int = 0, amp: float = 0.02) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return ((rng.standard_normal(n) + 1j * rng.standard_normal(n)) * amp).astype(np.complex64)


def tone(n: int, cycles_per_sample: float, amp: float = 0.3) -> np.ndarray:
    """A tone at a fixed digital frequency: its Hz are ``cycles_per_sample * rate``
    whatever rate the stream's tags say."""
    return (amp * np.exp(2j * np.pi * cycles_per_sample * np.arange(n))).astype(np.complex64)


def chirp(n: int, f0_hz: float, f1_hz: float, rate: float = RATE, amp: float = 0.3) -> np.ndarray:
    """A linear sweep from f0 to f1 over n samples."""
    t = np.arange(n) / rate
    k = (f1_hz - f0_hz) / (n / rate)
    return (amp * np.exp(2j * np.pi * (f0_hz * t + 0.5 * k * t * t))).astype(np.complex64)


def run_chain(tmp_path, iq, tags=(), mode="file", tracks=True, model_delay_s=0.0, long_signals="auto",
              paced=False, **det_kw):
    """-> (records at the end of the chain, tile dicts at the end of the chain in arrival
    order, the Detector block, host clock (unix) before and after the run). ``paced``: the
    samples arrive at RATE (a throttle), as from a receiver, not all at once."""
    from gnuradio import blocks, gr

    from gnuradio import rfdetect
    tb = gr.top_block()
    # the length tag lets the Detector finish the last tile and wait for the queue
    tags = [tag(0, "rfdetect_length", pmt.from_uint64(len(iq)))] + list(tags)
    src = blocks.vector_source_c(iq.tolist(), False, 1, tags)
    stft = rfdetect.stft_tile(fft_size=SMALL.fft_size, hop=SMALL.hop, width=SMALL.width, device="cpu")
    det = rfdetect.detector(models="energy", mode=mode, width=SMALL.width,
                            **{**TILE, "samp_rate": RATE, **det_kw})
    det.configure(SMALL)
    if model_delay_s:
        model = det.engine.models[0]
        fast = model.detect

        def slow(tile):  # a model slower than the stream (a busy GPU): sleeps, then detects
            time.sleep(model_delay_s)
            return fast(tile)
        model.detect = slow
    out = tmp_path / "records.jsonl"
    sink = rfdetect.jsonl_sink(str(out))
    debug = blocks.message_debug()
    if paced:
        throttle = blocks.throttle(gr.sizeof_gr_complex, RATE)
        tb.connect(src, throttle, stft, det)
    else:
        tb.connect(src, stft, det)
    last, port = det, "detections"
    blocks_kept = [stft, det, sink]
    for nxt in ([rfdetect.nms_merge(long_signals=long_signals), rfdetect.track_assigner()] if tracks else []):
        tb.msg_connect(last, port, nxt, "in")
        last, port = nxt, "out"
        blocks_kept.append(nxt)
    tb.msg_connect(last, port, sink, "in")
    tb.msg_connect(last, port, debug, "store")
    tb.python_blocks = blocks_kept  # Python blocks die with their last Python reference
    before = time.time()
    _run_with_deadline(tb)
    after = time.time()
    assert det.error is None, det.error
    recs = read_jsonl(out)
    for r in recs:
        validate_record(r)
    msgs = [from_pmt(debug.get_message(i)) for i in range(debug.num_messages())]
    tiles = [m["tile"] for m in msgs if "tile" in m]  # a Detector's first message says hello
    return recs, tiles, det, (before, after)
