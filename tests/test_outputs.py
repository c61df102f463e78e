"""Outputs that last and are fair (issue 13, items 4 and 5): a ZeroMQ subscriber that
stops reading costs only itself; the SigMF Annotation Sink writes incrementally in
bounded memory and leaves something valid or recoverable after a crash; the JSONL
file grows line by line while the flowgraph runs."""
import json
import os
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import pytest
import sigmf
import zmq

from gnuradio.rfdetect.formats.record_outputs import (JOURNAL_SUFFIX, AnnotationWriter, JsonlWriter, RecordPublisher,
                                              SequenceCheck, recover_journal)
from gnuradio.rfdetect.formats.records import STATS_SCHEMA, read_jsonl, to_annotation, validate_record
from gnuradio.rfdetect.formats.sigmf_io import annotation_key

from conftest import RATE, SMALL, TILE, run_cli
from test_live import _long_recording


def _records(n, pad=0, start=0):
    """Valid detection records; ``seq`` is the order they were made in."""
    return [{"schema": "rfdetect.detection/1", "event": "detection", "seq": i, "t_start": i * 1e-3,
             "t_stop": i * 1e-3 + 5e-4, "f_low": 1e6 + i, "f_high": 2e6 + i, "label": "x", "score": 1.0, "model": "m",
             "track_id": None, "sample_start": (i * 7919) % 100003, "sample_count": 100 + i % 50,
             "pad": "x" * pad} for i in range(start, start + n)]


def _wait_until(cond, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


# ---------------------------------------------------------------- ZeroMQ (item 4)
def _sub(address, rcvhwm=1000, topics=("",)):
    s = zmq.Context.instance().socket(zmq.SUB)
    s.setsockopt(zmq.RCVHWM, rcvhwm)
    s.connect(address)
    for t in topics:
        s.setsockopt_string(zmq.SUBSCRIBE, t)
    return s


def test_a_subscriber_that_never_reads_does_not_starve_one_that_keeps_up():
    # 20000 records of ~2 kB (40 MB): far more than the stalled subscriber's queue
    # (1000 messages here + 100 at its end + the loopback socket buffers) can hold
    n, pad = 20000, 2000
    pub = RecordPublisher("tcp://127.0.0.1:0", hwm=1000)
    stalled = _sub(pub.address, rcvhwm=100)
    got, stop = [], threading.Event()

    def keep_up():
        s = _sub(pub.address)
        try:
            while not stop.is_set() and len(got) < n:
                if s.poll(50):
                    topic, payload = s.recv_multipart()
                    got.append(json.loads(payload)["seq"])
        finally:
            s.close(linger=0)

    th = threading.Thread(target=keep_up)
    th.start()
    try:
        assert pub.wait_for_subscriber(10, count=2), "the two subscribers did not join"
        recs = _records(n, pad=pad)
        t0 = time.perf_counter()
        for i in range(0, n, 100):  # paced, as a flowgraph produces them
            pub.publish(recs[i:i + 100])
            time.sleep(0.003)
        publish_s = time.perf_counter() - t0
        _wait_until(lambda: len(got) >= n, 30, "the subscriber that keeps up to get every record")
    finally:
        stop.set()
        th.join(timeout=10)
    try:
        assert not th.is_alive()
        assert publish_s < 10.0, f"publishing waited for a subscriber: {publish_s:.1f} s"
        assert got == list(range(n))  # every record, in order, none twice
        assert pub.sent == n and pub.dropped == 0

        # the stalled subscriber now reads what was kept for it: an ordered prefix, and
        # it can count exactly what it lost (zmq_seq gaps, the tail from a stats message)
        check, mine = SequenceCheck(), []
        while stalled.poll(500):
            topic, payload = stalled.recv_multipart()
            obj = json.loads(payload)
            check.feed(topic.decode(), obj)
            mine.append(obj["seq"])
        assert 0 < len(mine) < n // 2, f"the stalled subscriber was not starved ({len(mine)} of {n})"
        assert mine == sorted(mine) and mine[0] == 0
        pub.publish_stats({"schema": STATS_SCHEMA})
        assert stalled.poll(5000), "no stats message reached the stalled subscriber once it read again"
        topic, payload = stalled.recv_multipart()
        stats = json.loads(payload)
        check.feed(topic.decode(), stats)
        assert stats["publisher"]["sent_by_topic"] == {"detection": n, "stats": 1}
        assert len(mine) + check.lost == n and check.restarts == 0
    finally:
        stalled.close(linger=0)
        pub.close(linger_ms=0)


def test_sequence_check_counts_gaps_tails_and_restarts():
    c = SequenceCheck()
    for seq in (3, 4, 7):  # joined at 3 (not a loss), then 5 and 6 lost
        c.feed("detection", {"zmq_seq": seq})
    c.feed("track.new", {"zmq_seq": 0})
    assert c.lost == 2
    # 12 detections and 2 track.new were sent before this stats message: 8..11 and 1 lost
    assert c.feed("stats", {"zmq_seq": 0, "publisher": {"sent_by_topic": {"detection": 12, "track.new": 2,
                                                                          "track.end": 5, "stats": 1}}}) == 5
    assert c.lost == 7  # track.end: never subscribed to, not counted
    c.feed("detection", {"zmq_seq": 12})  # no gap counted twice
    assert c.lost == 7 and c.restarts == 0
    c.feed("detection", {"zmq_seq": 0})
    assert c.restarts == 1 and c.received == 7
    with pytest.raises(ValueError, match="zmq_seq"):
        c.feed("detection", {})


# ---------------------------------------------------------------- SigMF annotations (item 5)
def _sigmf_annotations(meta_path):
    handle = sigmf.sigmffile.fromfile(str(meta_path))  # sigmf-python validates (order included)
    return handle.get_annotations()


def test_annotations_reach_the_journal_as_they_come_and_memory_stays_bounded(tmp_path):
    w = AnnotationWriter(tmp_path / "live", sample_rate=RATE, center_freq=915e6, sort_chunk=1000)
    journal = tmp_path / ("live" + JOURNAL_SUFFIX)
    w.add(_records(10))
    # a second reader sees them now, not at the next flush or at the end
    with open(journal, encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert len(lines) == 11 and json.loads(lines[-1]) == to_annotation(_records(10)[-1])

    # 20000 more, in blocks, with tracemalloc watching: the old sink kept every
    # annotation (about 1 kB each as Python dicts: some 20 MB here)
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        for i in range(10, 20010, 1000):
            w.add(_records(1000, start=i))
        grown, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        w.finalise()  # 21 sorted runs of 1000 merged
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert grown - base < 1e6, f"adding 20000 annotations kept {(grown - base) / 1e6:.1f} MB"
    assert peak - base < 8e6, f"finalising took {(peak - base) / 1e6:.1f} MB"
    anns = _sigmf_annotations(tmp_path / "live.sigmf-meta")
    assert len(anns) == 20010 and anns == sorted(anns, key=annotation_key)
    assert all(a["core:sample_count"] > 0 and a["core:freq_upper_edge"] > a["core:freq_lower_edge"] for a in anns)
    assert not journal.exists()
    assert sorted(os.listdir(tmp_path)) == ["live.sigmf-meta"]  # no temporary file left
    w.finalise()  # idempotent
    with pytest.raises(ValueError, match="finalised"):
        w.add(_records(1))


def test_the_source_recordings_annotations_and_data_are_kept(tmp_path, recording):
    w = AnnotationWriter(tmp_path / "out", source=str(recording))
    truth = json.loads(Path(recording).read_text())["annotations"]
    w.add(_records(5))
    w.finalise()
    meta = tmp_path / "out.sigmf-meta"
    anns = _sigmf_annotations(meta)
    assert len(anns) == len(truth) + 5 and truth
    assert os.path.samefile(tmp_path / "out.sigmf-data", Path(str(recording).replace("-meta", "-data")))


_CRASH = r"""
import os, sys
from gnuradio.rfdetect.formats.record_outputs import AnnotationWriter
sys.path.insert(0, sys.argv[2])
from test_outputs import _records
w = AnnotationWriter(sys.argv[1], sample_rate=2e6, center_freq=915e6)
w.add(_records(300))
w.add(_records(200, start=300))
w._journal.write(b'{"core:sample_start": 12')  # a write cut short by the crash
os._exit(9)  # no finalise, no stop(): as a kill -9 or a power cut after the OS wrote
"""


def test_a_crash_leaves_a_journal_that_recovers_into_a_valid_recording(tmp_path):
    base = tmp_path / "run ü"
    proc = subprocess.run([sys.executable, "-c", _CRASH, str(base), str(Path(__file__).parent)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 9, proc.stderr
    journal = Path(str(base) + JOURNAL_SUFFIX)
    assert journal.exists() and not Path(str(base) + ".sigmf-meta").exists()

    # a sink started again on the same base first recovers the crashed run aside
    w = AnnotationWriter(base, sample_rate=2e6, center_freq=915e6)
    aside = Path(w.recovered["meta"])
    assert w.recovered["annotations"] == 500 and w.recovered["torn"] == 1
    assert aside.name.startswith("run ü.recovered-") and aside.name.endswith(".sigmf-meta")
    anns = _sigmf_annotations(aside)
    assert sorted(a["core:sample_start"] for a in anns) == sorted(r["sample_start"] for r in _records(500))
    w.add(_records(3))
    w.finalise()
    assert len(_sigmf_annotations(Path(str(base) + ".sigmf-meta"))) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["run ü.sigmf-meta", aside.name])

    # by hand, with the console command
    proc = subprocess.run([sys.executable, "-c", _CRASH, str(base), str(Path(__file__).parent)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 9, proc.stderr
    out = run_cli("recover", journal, tmp_path / "by_hand")
    assert "500 annotations" in out.stdout and "cut short" in out.stdout
    assert len(_sigmf_annotations(tmp_path / "by_hand.sigmf-meta")) == 500 and not journal.exists()


def test_a_damaged_journal_is_a_clear_error_and_nothing_is_written(tmp_path):
    j = tmp_path / ("x" + JOURNAL_SUFFIX)
    j.write_text("not json\n")
    with pytest.raises(ValueError, match="not an rfdetect annotation journal"):
        recover_journal(j)
    w = AnnotationWriter(tmp_path / "y", sample_rate=1e6)
    w.add(_records(2))
    w._journal.write(b"\0\0\0\n")  # damage in the middle, not a torn last line
    w.add(_records(2, start=2))
    w._journal.close()
    w._journal = None
    with pytest.raises(ValueError, match=r"y.sigmf-meta.journal:4: damaged line"):
        recover_journal(tmp_path / ("y" + JOURNAL_SUFFIX))
    proc = run_cli("recover", tmp_path / ("y" + JOURNAL_SUFFIX), check=False)
    assert proc.returncode == 2 and "y.sigmf-meta.journal:4: damaged line" in proc.stderr
    assert not (tmp_path / "y.sigmf-meta").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    # a sink restarting on that base is not stopped by it: the journal is moved aside, kept
    w = AnnotationWriter(tmp_path / "y", sample_rate=1e6)
    assert "damaged line" in w.recovered["error"]
    damaged = [p for p in tmp_path.iterdir() if p.name.endswith(".damaged")]
    assert len(damaged) == 1 and damaged[0].read_bytes().count(b"\n") == 6
    w.finalise()
    assert _sigmf_annotations(tmp_path / "y.sigmf-meta") == []


# ---------------------------------------------------------------- JSONL (item 5)
_FULL_DISK = r"""
import resource, signal, sys
from gnuradio.rfdetect.formats.record_outputs import JsonlWriter
sys.path.insert(0, sys.argv[2])
from test_outputs import _records
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (100000, 100000))
w = JsonlWriter(sys.argv[1])
try:
    for i in range(0, 10000, 7):
        w.add(_records(7, start=i))
except OSError as e:
    print("failed", w.count, e.errno)
"""


def test_a_write_that_fails_part_way_leaves_only_whole_lines(tmp_path):
    out = tmp_path / "d.jsonl"
    proc = subprocess.run([sys.executable, "-c", _FULL_DISK, str(out), str(Path(__file__).parent)],
                          capture_output=True, text=True, timeout=60)
    assert proc.stdout.startswith("failed"), proc.stdout + proc.stderr
    count = int(proc.stdout.split()[1])
    assert out.stat().st_size < 100000 and out.read_bytes().endswith(b"\n")
    assert [r["seq"] for r in read_jsonl(out)] == list(range(count))  # every line whole, none missing


def test_a_second_reader_sees_jsonl_lines_and_annotations_while_the_flowgraph_runs(tmp_path):
    from gnuradio import gr

    from gnuradio import rfdetect
    rec = _long_recording(tmp_path / "r", seconds=2.0)
    tb = gr.top_block()
    src = rfdetect.sigmf_source(str(rec), realtime=True)  # paced like an SDR: 2 s
    stft = rfdetect.stft_tile(fft_size=SMALL.fft_size, hop=SMALL.hop, width=SMALL.width, device="cpu")
    det = rfdetect.detector(models="energy", mode="realtime", width=SMALL.width, deadline_s=0.5, queue_size=16,
                            samp_rate=RATE, **TILE)
    nms, tracks = rfdetect.nms_merge(), rfdetect.track_assigner()
    out, base = tmp_path / "d.jsonl", tmp_path / "ann"
    jsonl = rfdetect.jsonl_sink(str(out))
    ann = rfdetect.sigmf_annotation_sink(str(base), samp_rate=RATE, center_freq=915e6, flush_interval_s=0.2)
    tb.connect(src, stft, det)
    tb.msg_connect(det, "detections", nms, "in")
    tb.msg_connect(nms, "out", tracks, "in")
    for sink in (jsonl, ann):
        tb.msg_connect(tracks, "out", sink, "in")
    tb.python_blocks = (src, stft, det, nms, tracks, jsonl, ann)
    journal = Path(str(base) + JOURNAL_SUFFIX)
    seen, stop = [], threading.Event()  # (when, line) as `tail -f` would print them

    def tail():
        while not out.exists() and not stop.wait(0.01):
            pass
        with open(out, encoding="utf-8") as f:
            buf = ""
            while True:
                chunk = f.read()
                buf += chunk
                *lines, buf = buf.split("\n")
                seen.extend((time.monotonic(), line) for line in lines)
                if stop.is_set() and not chunk:
                    return
                time.sleep(0.02)

    journal_lines = []

    def watch_journal():
        while not stop.wait(0.05):
            if journal.exists():
                journal_lines.append((time.monotonic(), journal.read_bytes().count(b"\n")))

    threads = [threading.Thread(target=tail), threading.Thread(target=watch_journal)]
    for t in threads:
        t.start()
    try:
        tb.start()
        tb.wait()
        ended = time.monotonic()
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
    assert not any(t.is_alive() for t in threads)
    early = [line for when, line in seen if when < ended - 0.5]
    assert len(early) >= 5, f"only {len(early)} lines were visible before the flowgraph ended"
    for line in early:  # what the reader saw was whole records
        validate_record(json.loads(line))
    assert [line for _, line in seen] == out.read_text().splitlines()
    assert any(n > 5 for when, n in journal_lines if when < ended - 0.5), "no annotation reached the journal early"
    anns = _sigmf_annotations(Path(str(base) + ".sigmf-meta"))
    recs = read_jsonl(out)
    assert len(anns) == sum(r["event"] in ("new", "update") for r in recs) > 10
    assert not journal.exists()


def test_jsonl_to_a_device_is_written_closed_and_never_removed(tmp_path):
    """`rfdetect detect --out /dev/null` (the live tests, scripts that only want ZeroMQ):
    fsync on /dev/null is EINVAL on some kernels, and a failed run must not unlink a
    device (as root it would remove /dev/null); a regular file is still fsynced and an
    aborted one still removed."""
    null = Path(os.devnull)
    w = JsonlWriter(null)
    w.add([{"a": 1}])
    w.commit()
    w = JsonlWriter(null)
    w.add([{"a": 1}])
    w.abort()
    assert null.exists() and null.is_char_device()
    regular = tmp_path / "d.jsonl"
    w = JsonlWriter(regular)
    w.add([{"a": 1}, {"b": 2}])
    w.commit()
    assert regular.read_text().count("\n") == 2
    w = JsonlWriter(regular)
    w.abort()
    assert not regular.exists()


def test_files_put_in_place_by_rename_get_the_mode_open_would_give(tmp_path):
    """Recordings, cards and reports are written to a temporary file and renamed: they must
    not keep mkstemp's 0o600 (a recording made by a service user would be unreadable to
    everyone else). New files follow the umask, a replaced file keeps its mode."""
    from gnuradio.rfdetect.formats.sigmf_io import atomic_write_json, write_archive
    for umask, want in ((0o022, 0o644), (0o077, 0o600)):
        out = tmp_path / f"u{umask:o}"
        run_cli("synth", out, "--n", "1", "--seed", "3", "--sample-rate", "1e6", "--duration", "0.02",
                preexec_fn=lambda m=umask: os.umask(m))
        files = sorted(out.glob("*.sigmf-*"))
        assert [f.suffix for f in files] == [".sigmf-data", ".sigmf-meta"]
        assert {f.name: f.stat().st_mode & 0o777 for f in files} == {f.name: want for f in files}
    kept = tmp_path / "card.json"
    kept.write_text("{}")
    kept.chmod(0o640)
    atomic_write_json(kept, {"a": 1})
    assert json.loads(kept.read_text()) == {"a": 1} and kept.stat().st_mode & 0o777 == 0o640
    old = os.umask(0o022)
    try:
        base = str(files[0]).removesuffix(".sigmf-data")
        arc = write_archive(base, tmp_path / "r.sigmf")
    finally:
        os.umask(old)
    assert arc.stat().st_mode & 0o777 == 0o644
