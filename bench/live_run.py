"""A real-time run for the bench/ scripts: a SigMF recording played at its sample rate
(repeating, standing in for an SDR) -> STFT Tile -> Detector (realtime mode) -> NMS
Merge -> Track Assigner -> ZMQ PUB Sink, with a subscriber on 127.0.0.1 that keeps up.
With ``iq_detector``, the IQ Detector block (a branch per model card's spectrogram)
stands in for the STFT Tile, Detector and NMS Merge.

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
from typing import Optional

import zmq
from gnuradio import blocks, gr

from gnuradio import rfdetect
from gnuradio.rfdetect.apps.detect_flowgraph import card_spectrogram
from gnuradio.rfdetect.apps.synth import synth_dataset
from gnuradio.rfdetect.dsp.spectrogram import SpectrogramParams

CACHE = Path(__file__).resolve().parent / ".cache"


def base_recording(seconds: float = 1.0, seed: int = 4, profile: str = "classic") -> Path:
    """A labelled 10 MS/s synthetic recording of ``rfdetect synth``'s ``profile``, made once
    and kept in bench/.cache."""
    d = CACHE / (f"rec_{seed}_{seconds:g}s" + ("" if profile == "classic" else f"_{profile}"))
    metas = sorted(d.glob("*.sigmf-meta"))
    if not metas:
        tmp = d.with_name(d.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        synth_dataset(tmp, n=1, seed=seed, sample_rate=10e6, duration=seconds, n_signals=12, profile=profile)
        tmp.rename(d)
        metas = sorted(d.glob("*.sigmf-meta"))
    return metas[0]


def at_rate(meta: Path, rate: float, center_freq: Optional[float] = None) -> Path:
    """The same samples declared at another sample rate (pacing runs at that rate) and,
    where given, centre frequency."""
    # the folder names the recording (base_recording's seed, length and profile)
    out = CACHE / (f"{meta.parent.name}_{meta.stem}_{rate / 1e6:g}MSps"
                   + (f"_{center_freq / 1e6:g}MHz" if center_freq else ""))
    m = json.loads(meta.read_text())
    m["global"]["core:sample_rate"] = float(rate)
    if center_freq:
        for c in m.get("captures", []):
            c["core:frequency"] = float(center_freq)
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
             rss_every_s: float = 0.0, attach=None, iq_detector: Optional[dict] = None) -> dict:
    """``attach(tb, track_assigner) -> [blocks]``: more sinks on the Track Assigner's output.
    ``iq_detector``: run the IQ Detector block with these more arguments (``companions``)
    in place of the STFT Tile, Detector and NMS Merge; its tile counts are summed over its
    branches."""
    src = rfdetect.sigmf_source(str(meta), repeat=True, realtime=True)
    rate = src.recording.sample_rate
    tb = gr.top_block()
    head = blocks.head(gr.sizeof_gr_complex, int(seconds * rate))
    head.set_min_output_buffer(1 << 21)  # as the SigMF Source does (see there)
    tracks = rfdetect.track_assigner()
    pub = rfdetect.zmq_pub_sink("tcp://127.0.0.1:0")
    freq = src.recording.center_frequency
    if iq_detector is not None:
        det = rfdetect.iq_detector(models=list(models), samp_rate=rate, center_freq=freq or 0.0, mode="realtime",
                                   queue_size=queue_size, concurrency=concurrency, stats_interval_s=5.0,
                                   **iq_detector)
        tb.connect(src, head, det)
        tb.msg_connect(det, "detections", tracks, "in")
        chain = [det]
    else:
        grid = model_grid(models)
        stft = rfdetect.stft_tile(grid.fft_size, grid.hop, grid.window, grid.width, grid.pooling,
                                  grid.normalisation, grid.db_low, grid.db_high, samp_rate=rate)
        det = rfdetect.detector(models=list(models), mode="realtime", queue_size=queue_size, samp_rate=rate,
                                width=grid.width, center_freq=freq, concurrency=concurrency,
                                stats_interval_s=5.0)
        nms = rfdetect.nms_merge()
        tb.connect(src, head, stft, det)
        tb.msg_connect(det, "detections", nms, "in")
        tb.msg_connect(nms, "out", tracks, "in")
        chain = [stft, det, nms]
    tb.msg_connect(tracks, "out", pub, "in")
    tb.msg_connect(det, "stats", pub, "stats")
    tb.python_blocks = [src, *chain, tracks, pub] + list(attach(tb, tracks) if attach else [])
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
    branches = det.stats() if iq_detector is not None else [det.stats()]
    st = branches[0]
    return {"rate": rate, "seconds": seconds, "elapsed": elapsed,
            "tiles_done": sum(b["tiles_done"] for b in branches),
            "tiles_dropped": sum(b["tiles_dropped"] for b in branches), "max_lag_s": src.max_lag_s,
            "overruns": src.overruns, "latency_ms": pub.publisher.latency(),
            "models": {k: v for b in branches for k, v in b["models"].items()}, "concurrency": st["concurrency"],
            "received": received[0], "zmq_sent": pub.sent, "zmq_dropped": pub.dropped, "rss": rss}
