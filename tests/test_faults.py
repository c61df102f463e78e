"""Fault tolerance: an overloaded Detector in a paced flowgraph, and ZeroMQ subscribers
that are missing, slow or late."""
import json
import threading
import time

import pytest
import zmq

from gnuradio.rfdetect.formats.record_outputs import RecordPublisher, SequenceCheck
from gnuradio.rfdetect.formats.records import STATS_SCHEMA, read_jsonl

from conftest import RATE, SMALL, TILE
from test_live import _long_recording
from test_outputs import _wait_until


def _paced_flowgraph(rec, mode, delay_s, realtime, out):
    from gnuradio import gr

    from gnuradio import rfdetect
    tb = gr.top_block()
    src = rfdetect.sigmf_source(str(rec), realtime=realtime)
    stft = rfdetect.stft_tile(fft_size=SMALL.fft_size, hop=SMALL.hop, width=SMALL.width, device="cpu")
    det = rfdetect.detector(models="energy", mode=mode, width=SMALL.width, queue_size=1, samp_rate=RATE, **TILE)
    det.configure(SMALL)
    model = det.engine.models[0]
    fast = model.detect

    def slow(tile):  # a deliberately slow model: sleeps (like a busy GPU) then detects
        time.sleep(delay_s)
        return fast(tile)
    model.detect = slow
    sink = rfdetect.jsonl_sink(str(out))
    tb.connect(src, stft, det)
    tb.msg_connect(det, "detections", sink, "in")
    tb.python_blocks = (src, stft, det, sink)  # Python blocks die with their last Python reference
    return tb, det


def test_overloaded_realtime_detector_drops_and_counts_but_never_blocks_the_source(tmp_path):
    rec = _long_recording(tmp_path / "r", seconds=1.0)
    tb, det = _paced_flowgraph(rec, "realtime", 0.15, True, tmp_path / "rt.jsonl")
    t0 = time.perf_counter()
    tb.run()
    elapsed = time.perf_counter() - t0
    st = det.stats()
    n_tiles = st["tiles_done"] + st["tiles_dropped"]
    # ~18 tiles arrive in 1 s; the model takes 0.15 s each: most are dropped, the source keeps time
    assert elapsed < 1.0 + 0.15 * 3, f"the source was held up: {elapsed:.2f} s for 1 s of samples"
    assert st["tiles_dropped"] >= n_tiles // 3 and st["tiles_done"] >= 3
    assert st["models"]["energy"]["tiles_dropped"] == st["tiles_dropped"]
    assert st["tiles_dropped_queue_full"] + st["tiles_dropped_deadline"] == st["tiles_dropped"]
    assert read_jsonl(tmp_path / "rt.jsonl")  # the tiles it did process gave detections


def test_overloaded_file_mode_processes_every_tile(tmp_path):
    rec = _long_recording(tmp_path / "r", seconds=0.5)
    tb, det = _paced_flowgraph(rec, "file", 0.03, False, tmp_path / "f.jsonl")
    tb.run()
    st = det.stats()
    rows = int(0.5 * RATE) // SMALL.hop
    step = TILE["tile_height"] - TILE["overlap"]
    assert st["tiles_dropped"] == 0 and st["tiles_done"] == -(-(rows - TILE["overlap"]) // step)
    starts = sorted(r["t_start"] for r in read_jsonl(tmp_path / "f.jsonl"))
    assert len(starts) >= 5 and starts[-1] > 0.35  # bursts every 100 ms, all of them seen


# ---------------------------------------------------------------- ZeroMQ
def _records(n, pad=0):
    return [{"schema": "rfdetect.detection/1", "event": "detection", "seq": i, "t_start": i * 1e-3,
             "t_stop": i * 1e-3 + 5e-4, "f_low": 0.0, "f_high": 1.0, "label": "x", "score": 1.0, "model": "m",
             "pad": "x" * pad} for i in range(n)]


def test_no_subscriber_never_blocks():
    pub = RecordPublisher("tcp://127.0.0.1:0", hwm=10)
    try:
        t0 = time.perf_counter()
        pub.publish(_records(20000))
        assert time.perf_counter() - t0 < 5.0
        assert pub.sent == 20000 and pub.dropped == 0  # nobody to queue for: nothing to drop
    finally:
        pub.close(linger_ms=0)


def _subscriber(address, received, stop, delay_s=0.0, hwm=1000, check=None, hurry=None):
    """Appends each record's ``seq`` to ``received``, feeds every message to
    ``check`` (a SequenceCheck); sleeps ``delay_s`` per message until ``hurry`` is set."""
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, hwm)
    sub.connect(address)
    sub.setsockopt_string(zmq.SUBSCRIBE, "")
    while not stop.is_set():
        if sub.poll(50):
            topic, payload = sub.recv_multipart()
            obj = json.loads(payload)
            if check is not None:
                check.feed(topic.decode(), obj)
            if topic != b"stats":
                received.append(obj["seq"])
            if delay_s and not (hurry and hurry.is_set()):
                time.sleep(delay_s)
    sub.close(linger=0)


def test_slow_subscriber_gets_an_ordered_subset_and_counts_what_it_lost():
    pub = RecordPublisher("tcp://127.0.0.1:0", hwm=20)
    got, stop, hurry, check = [], threading.Event(), threading.Event(), SequenceCheck()
    th = threading.Thread(target=_subscriber, args=(pub.address, got, stop, 0.01, 20, check, hurry))
    th.start()
    try:
        assert pub.wait_for_subscriber(10)
        t0 = time.perf_counter()
        # 40 MB: more than the loopback socket buffers hold, so the high-water mark is reached
        pub.publish(_records(10000, pad=4000))
        publish_s = time.perf_counter() - t0
        hurry.set()  # now it reads at full speed: what it still gets was queued for it
        last = [-1, time.monotonic()]

        def quiet():
            if len(got) != last[0]:
                last[:] = [len(got), time.monotonic()]
            return time.monotonic() - last[1] > 0.5
        _wait_until(quiet, 60, "the slow subscriber to empty its queue")
        # a stats message tells it how many were sent: losses after its last record count too
        pub.publish_stats({"schema": STATS_SCHEMA})
        _wait_until(lambda: "stats" in check.next, 10, "the stats message")
    finally:
        stop.set()
        th.join(timeout=10)
        pub.close(linger_ms=0)
    assert not th.is_alive()
    assert publish_s < 5.0  # to a subscriber reading 100 records/s: publishing never waited
    assert pub.sent_by_topic == {"detection": 10000, "stats": 1} and pub.dropped == 0  # losses: its queue's only
    assert got == sorted(got) and len(set(got)) == len(got) and 0 < len(got) < 10000
    assert len(got) + check.lost == 10000 and check.restarts == 0


@pytest.mark.parametrize("late_s", [0.0, 0.3])
def test_a_subscriber_that_keeps_up_gets_every_record_in_order_from_when_it_joined(late_s):
    pub = RecordPublisher("tcp://127.0.0.1:0", hwm=10000)
    got, stop = [], threading.Event()
    n = 1500
    th = threading.Thread(target=lambda: (time.sleep(late_s), _subscriber(pub.address, got, stop)))
    th.start()
    try:
        if late_s == 0.0:
            assert pub.wait_for_subscriber(10)
        recs = _records(n)
        for i in range(0, n, 10):  # 1 s of records, 10 every ~6.7 ms
            pub.publish(recs[i:i + 10])
            time.sleep(1.0 / (n / 10))
        time.sleep(0.5)
    finally:
        stop.set()
        th.join()
        pub.close(linger_ms=0)
    assert pub.dropped == 0
    assert got, "the subscriber received nothing"
    # contiguous from the first record it saw to the last one sent, no gaps, in order
    assert got == list(range(got[0], n))
    assert pub.sent_by_topic == {"detection": n}
    if late_s == 0.0:
        assert got[0] == 0
    else:
        assert got[0] > 0


def test_a_detector_waits_for_the_merge_while_it_works_and_no_longer():
    """stream_end.wait_handled, as a Detector whose branch ended first uses it: while the NMS
    Merge still holds its run and reports progress (other branches' tiles), the deadline
    moves on; once the merge releases the run it returns True; with nobody holding it and
    nothing handled it gives up at its deadline (no hang)."""
    import threading
    import time as _time
    from gnuradio.rfdetect.blocks import stream_end
    run = stream_end.new_run_token()
    stream_end.hold([run])

    def merge_works_then_releases():
        for _ in range(8):  # 8 x 0.1 s of progress: longer than the 0.3 s deadline
            _time.sleep(0.1)
            stream_end.touch([run])
        stream_end.release([run])

    t = threading.Thread(target=merge_works_then_releases)
    t.start()
    assert stream_end.wait_handled(run, timeout=0.3) is True
    t.join()
    # held and never released, no progress: False after the deadline
    stuck = stream_end.new_run_token()
    stream_end.hold([stuck])
    t0 = _time.monotonic()
    assert stream_end.wait_handled(stuck, timeout=0.3) is False
    assert _time.monotonic() - t0 < 5


@pytest.mark.parametrize("seed", range(12))
def test_the_merge_block_ends_a_run_of_two_detectors_once_whatever_order_their_tiles_come_in(seed):
    """The NMS Merge block, fed as GNU Radio feeds it (hello, then tile messages with the final
    one's run token announced by its Detector), in a random interleaving of two Detectors: it
    sends the tiles in time order, exactly one final message and that one last, carrying both
    run tokens; no token is left waiting in stream_end (each Detector may end), and every
    record is accounted for."""
    import random
    from gnuradio.rfdetect.blocks import stream_end
    from gnuradio.rfdetect.blocks.messages import from_pmt, tile_message, to_pmt
    from gnuradio.rfdetect.blocks.nms_merge import nms_merge
    rng = random.Random(seed)
    block = nms_merge()
    sent = []
    block.message_port_pub = lambda port, msg: sent.append(from_pmt(msg))  # no subscriber: keep what it sends
    runs = [stream_end.new_run_token() for _ in range(2)]
    for run in runs:
        block._on_message(to_pmt({"hello": {"stream": run}}))
    streams = []
    for k, (run, length) in enumerate(zip(runs, (0.1, 0.05))):
        n = rng.randint(1, 6)
        streams.append([({"index": i, "t_start": i * 0.8 * length, "t_stop": (i * 0.8 + 1) * length,
                          "next_t_start": (i + 1) * 0.8 * length, "final": i == n - 1, "mode": "file",
                          "stream": run, "branch": f"m{k}", "detector": k, "run": run},
                         [{"t_start": i * 0.8 * length + 0.01, "t_stop": i * 0.8 * length + 0.02, "f_low": k * 1e4,
                           "f_high": k * 1e4 + 1e3, "label": "a", "score": 0.9, "model": f"m{k}", "sample_start": 0,
                           "sample_count": 1, "tile": i, "tile_edge": []}]) for i in range(n)])
    order = [0] * len(streams[0]) + [1] * len(streams[1])
    rng.shuffle(order)
    pos = [0, 0]
    for k in order:
        tile, records = streams[k][pos[k]]
        pos[k] += 1
        if tile["final"]:
            stream_end._add([tile["run"]], 1)  # the Detector expects its one rfdetect subscriber
        block._on_message(tile_message(tile, records))
    finals = [m for m in sent if m["tile"].get("final")]
    assert len(finals) == 1 and sent[-1] is finals[0] and sorted(finals[0]["tile"]["run"]) == sorted(runs)
    assert all(stream_end._pending.get(run, 0) == 0 for run in runs)
    starts = [m["tile"]["t_start"] for m in sent]
    assert starts == sorted(starts) and len(sent) == len(order)
    assert sum(len(m["records"]) for m in sent) == len(order) == block.merger.records_out
