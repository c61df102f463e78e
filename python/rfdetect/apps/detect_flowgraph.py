"""The file-mode detection flowgraph behind ``rfdetect detect`` and ``make demo``.

SigMF Source -> STFT Tile -> Detector -> NMS Merge -> Track Assigner -> sinks
(JSONL, ZMQ PUB, SigMF annotations), all real GNU Radio blocks.

Models trained on different spectrograms (``default`` and ``narrowband``, say) each get
a branch of their own, an STFT Tile and a Detector per spectrogram, and every branch
feeds the one NMS Merge (``spectrogram_branches``)::

    SigMF Source -+- STFT Tile (card A) -> Detector (models of A) -+- NMS Merge -> ...
                  +- STFT Tile (card B) -> Detector (models of B) -+
"""
from __future__ import annotations

import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from gnuradio import gr

from ..blocks.iq_detector import add_branches, card_spectrogram, spectrogram_branches
from ..blocks.jsonl_sink import jsonl_sink
from ..blocks.nms_merge import nms_merge
from ..formats.record_outputs import RecordPublisher
from ..blocks.sigmf_annotation_sink import sigmf_annotation_sink
from ..formats.sigmf_io import RecordingError
from ..blocks.sigmf_source import sigmf_source
from ..dsp.spectrogram import SpectrogramParams
from ..blocks.track_assigner import track_assigner


class DetectError(RuntimeError):
    pass


@dataclass
class DetectOptions:
    models: list = field(default_factory=lambda: ["default"])
    params: SpectrogramParams = field(default_factory=SpectrogramParams)
    tile_height: int = 1024
    overlap: int = 128
    nms_iou: float = 0.5
    class_aware: bool = True
    track_iou_gate: float = 0.5
    track_max_gap_s: float = 0.02
    score_threshold: float = 0.0
    out: Optional[str] = None
    zmq: Optional[str] = None
    zmq_wait_s: float = 0.0
    sigmf_out: Optional[str] = None
    echo: bool = False
    save_tiles: Optional[str] = None
    profile: str = "auto"
    backend: str = "auto"
    device: str = "auto"
    precision: str = "auto"
    batch_size: int = -1
    concurrency: str = "auto"
    # receiver artefacts not reported (the Detector's ignore_dc / ignore_freqs)
    ignore_dc: bool = True
    ignore_freqs: tuple = ()
    # models trained on different spectrograms: a branch each (spectrogram_branches)
    # instead of all models on ``params``
    by_card: bool = False


class DetectFlowgraph(gr.top_block):
    def __init__(self, recording: str, opt: DetectOptions):
        gr.top_block.__init__(self, "rfdetect detect")
        self.source = sigmf_source(str(recording))
        rec = self.source.recording
        branches = spectrogram_branches(opt.models, opt.params) if opt.by_card else [(opt.models, opt.params)]
        # every branch needs a row, or its Detector would never end its stream
        hop = max(p.hop for _, p in branches)
        if rec.n_samples < hop:
            raise RecordingError(f"{rec.data_path}: the recording has {rec.n_samples} samples, fewer than "
                                 f"one hop ({hop}) of the spectrogram: nothing to detect")
        self.nms = nms_merge(opt.nms_iou, opt.class_aware)
        self.stfts, self.detectors = add_branches(
            self, self.source, branches, self.nms, tile_dir=opt.save_tiles or "", tile_height=opt.tile_height,
            overlap=opt.overlap, mode="file", score_threshold=opt.score_threshold,
            samp_rate=rec.sample_rate, center_freq=rec.center_frequency, profile=opt.profile,
            backend=opt.backend, device=opt.device, precision=opt.precision, batch_size=opt.batch_size,
            concurrency=opt.concurrency, ignore_dc=opt.ignore_dc, ignore_freqs=opt.ignore_freqs)
        self.stft, self.detector = self.stfts[0], self.detectors[0]
        self.tracker = track_assigner(opt.track_iou_gate, opt.track_max_gap_s, opt.class_aware)
        self.msg_connect(self.nms, "out", self.tracker, "in")
        self.sinks = []
        if opt.out:
            self.jsonl = jsonl_sink(opt.out, echo=opt.echo)
            self.msg_connect(self.tracker, "out", self.jsonl, "in")
            self.sinks.append(self.jsonl)
        if opt.zmq:
            from ..blocks.zmq_pub_sink import zmq_pub_sink
            self.zmq = zmq_pub_sink(opt.zmq)
            self.msg_connect(self.tracker, "out", self.zmq, "in")
            for det in self.detectors:
                self.msg_connect(det, "stats", self.zmq, "stats")
        if opt.sigmf_out:
            self.annotations = sigmf_annotation_sink(opt.sigmf_out, str(recording))
            self.msg_connect(self.tracker, "out", self.annotations, "in")


def _outputs(opt: DetectOptions) -> list[Path]:
    paths = []
    if opt.out:
        paths += [Path(opt.out), Path(str(opt.out) + ".partial")]
    if opt.sigmf_out:
        base = str(opt.sigmf_out).removesuffix(".sigmf-meta")
        paths += [Path(base + ".sigmf-meta"), Path(base + ".sigmf-data"), Path(base + ".sigmf-meta.journal")]
    return paths


def run_detect(recording: str, opt: DetectOptions, handle_signals: bool = True) -> dict:
    """Run the flowgraph to the end of the recording. On any error the outputs this
    run created are removed and :class:`DetectError`/RecordingError/ModelError raised."""
    existed = {p for p in _outputs(opt) if p.exists()}
    tb = None
    interrupted = threading.Event()
    try:
        tb = DetectFlowgraph(recording, opt)
        old = None
        if handle_signals and threading.current_thread() is threading.main_thread():
            def on_signal(signum, frame):
                interrupted.set()
                tb.stop()
            old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        if opt.zmq and opt.zmq_wait_s > 0 and not tb.zmq.publisher.wait_for_subscriber(opt.zmq_wait_s):
            print(f"rfdetect: no ZeroMQ subscriber joined within {opt.zmq_wait_s} s; publishing anyway")
        try:
            tb.start()
            tb.wait()
        finally:
            if old:
                for s, h in old.items():
                    signal.signal(s, h)
        for blk in [tb.source] + tb.detectors:
            if blk.error:
                raise DetectError(blk.error)
        # "stats": the first branch's Detector (the only one unless models of several spectrograms ran)
        branch_stats = [d.stats() for d in tb.detectors]
        return {"stats": branch_stats[0], "branch_stats": branch_stats, "interrupted": interrupted.is_set(),
                "zmq": {"sent": tb.zmq.sent, "dropped": tb.zmq.dropped} if opt.zmq else None,
                "n_samples": tb.source.recording.n_samples, "sample_rate": tb.source.recording.sample_rate}
    except BaseException:
        if tb is not None and getattr(tb, "jsonl", None) is not None:
            tb.jsonl.writer.abort()
        for p in _outputs(opt):
            if p not in existed and p.exists():
                p.unlink()
        raise


__all__ = ["DetectFlowgraph", "DetectOptions", "DetectError", "run_detect", "spectrogram_branches", "card_spectrogram", "RecordPublisher"]
