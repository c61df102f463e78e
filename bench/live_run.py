"""A real-time run for the bench/ scripts: a SigMF recording played at its sample rate
(repeating, standing in for an SDR) -> STFT Tile -> Detector (realtime mode) -> NMS
Merge -> Track Assigner -> ZMQ PUB Sink, with a subscriber on 127.0.0.1 that keeps up.

Reports dropped tiles, the source's lag behind the wall clock (``overruns``: times it
fell over 100 ms behind, where an SDR would overflow), end-to-end latency per tile
(last row into the Detector -> last detection out of the ZMQ sink), per-model
statistics and, optionally, resident memory sampled every ``rss_every_s``.
"""
import json
import shutil
import threading
import time
from pathlib import Path

import zmq
from gnuradio import blocks, gr

from gnuradio import rfdetect
from gnuradio.rfdetect.apps.detect_flowgraph import card_spectrogram
from gnuradio.rfdetect.apps.synth import synth_dataset
from gnuradio.rfdetect.dsp.spectrogram import SpectrogramParams

CACHE = Path(__file__).resolve().parent / ".cache"


def base_recording(seconds: float = 1.0, seed: int = 4) -> Path:
    """A labelled 10 MS/s synthetic recording, made once and kept in bench/.cache."""
    d = CACHE / f"rec_{seed}_{seconds:g}s"
    metas = sorted(d.glob("*.sigmf-meta"))
    if not metas:
        tmp = d.with_name(d.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        synth_dataset(tmp, n=1, seed=seed, sample_rate=10e6, duration=seconds, n_signals=12)
        tmp.rename(d)
        metas = sorted(d.glob("*.sigmf-meta"))
    return metas[0]


def at_rate(meta: Path, rate: float) -> Path:
    """The same samples declared at another sample rate (pacing runs at that rate)."""
    out = CACHE / f"{meta.stem}_{rate / 1e6:g}MSps"
    m = json.loads(meta.read_text())
    m["global"]["core:sample_rate"] = float(rate)
    m["annotations"] = []
    data = Path(str(out) + ".sigmf-data")
    if not data.exists():
        data.symlink_to(meta.with_suffix(".sigmf-data"))
    Path(str(out) + ".sigmf-meta").write_text(json.dumps(m))
    return Path(str(out) + ".sigmf-meta")


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def model_grid(models) -> SpectrogramParams:
    """The spectrogram the models run on: the first card's, as `rfdetect detect` runs a model
    (all models of one STFT Tile share it); the default for models without a card (energy)."""
    return next((g for g in map(card_spectrogram, models) if g is not None), SpectrogramParams())


def run_live(meta: Path, seconds: float, models=("default",), queue_size: int = 4, concurrency: str = "auto",
             rss_every_s: float = 0.0, attach=None) -> dict:
    """``attach(tb, track_assigner) -> [blocks]``: more sinks on the Track Assigner's output."""
    src = rfdetect.sigmf_source(str(meta), repeat=True, realtime=True)
    rate = src.recording.sample_rate
    tb = gr.top_block()
    head = blocks.head(gr.sizeof_gr_complex, int(seconds * rate))
    head.set_min_output_buffer(1 << 21)  # as the SigMF Source does (see there)
    grid = model_grid(models)
    stft = rfdetect.stft_tile(grid.fft_size, grid.hop, grid.window, grid.width, grid.pooling, grid.normalisation,
                              grid.db_low, grid.db_high, samp_rate=rate)
    det = rfdetect.detector(models=list(models), mode="realtime", queue_size=queue_size, samp_rate=rate,
                            width=grid.width, center_freq=src.recording.center_frequency, concurrency=concurrency,
                            stats_interval_s=5.0)
    nms = rfdetect.nms_merge()
    tracks = rfdetect.track_assigner()
    pub = rfdetect.zmq_pub_sink("tcp://127.0.0.1:0")
    tb.connect(src, head, stft, det)
    tb.msg_connect(det, "detections", nms, "in")
    tb.msg_connect(nms, "out", tracks, "in")
    tb.msg_connect(tracks, "out", pub, "in")
    tb.msg_connect(det, "stats", pub, "stats")
    tb.python_blocks = [src, stft, det, nms, tracks, pub] + list(attach(tb, tracks) if attach else [])
    received, stop = [0], threading.Event()

    def subscribe():
        s = zmq.Context.instance().socket(zmq.SUB)
        s.connect(pub.publisher.address)
        s.setsockopt_string(zmq.SUBSCRIBE, "")
        while not stop.is_set():
            if s.poll(100):
                s.recv_multipart()
                received[0] += 1
        s.close(linger=0)

    rss = []

    def sample_rss():
        t0 = time.monotonic()
        while not stop.wait(rss_every_s):
            rss.append((time.monotonic() - t0, rss_mb()))

    threads = [threading.Thread(target=subscribe, daemon=True)]
    if rss_every_s:
        threads.append(threading.Thread(target=sample_rss, daemon=True))
    for t in threads:
        t.start()
    pub.publisher.wait_for_subscriber(10)
    t0 = time.perf_counter()
    tb.run()
    elapsed = time.perf_counter() - t0
    stop.set()
    for t in threads:
        t.join()
    st = det.stats()
    return {"rate": rate, "seconds": seconds, "elapsed": elapsed, "tiles_done": st["tiles_done"],
            "tiles_dropped": st["tiles_dropped"], "max_lag_s": src.max_lag_s, "overruns": src.overruns,
            "latency_ms": pub.publisher.latency(), "models": st["models"], "concurrency": st["concurrency"],
            "received": received[0], "zmq_sent": pub.sent, "zmq_dropped": pub.dropped, "rss": rss}
