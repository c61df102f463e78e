"""IQ Detector block: IQ in, merged detections out, each model on the spectrogram of its card.

It is the STFT Tile -> Detector -> NMS Merge chain that ``rfdetect detect`` builds, in one
GNU Radio hierarchical block, so that a flowgraph gets what ``rfdetect detect`` gets:
``auto`` (the embedded model made for the capture), and models trained on different
spectrograms, each on its own branch::

    IQ -+- STFT Tile (card A) -> Detector (models of A) -+- NMS Merge -> detections
        +- STFT Tile (card B) -> Detector (models of B) -+
"""
from dataclasses import asdict
from pathlib import Path
from typing import Optional

from gnuradio import gr

from ..dsp.spectrogram import SpectrogramParams
from ..inference.model_runtime import AUTO_MODEL, BUILTIN_MODELS, NARROW_CAPTURE_MAX_FREQ, auto_models, \
    NARROW_CAPTURE_MAX_RATE, ModelCard, ModelError, ModelSpec, branch_tile_height, builtin_spectrogram, \
    model_card_file, resolve_auto_said
from .detector import detector, parse_models
from .nms_merge import nms_merge
from .stft_tile import stft_tile


# the most bytes of tiles a branch's lengthened queue (branch_queue_sizes) may hold: pulse's 128
# tiles of 4096 x 32 float32 are 64 MiB
MAX_BRANCH_QUEUE_BYTES = 64 << 20


def card_spectrogram(model) -> Optional[SpectrogramParams]:
    """The spectrogram ``model`` (a Detector model spec) was trained on, from its card (the
    ``pulse`` and ``carrier`` detectors: a grid of their own); None for a model that runs on any spectrogram
    (``energy``) and one that cannot be found or read (the Detector reports that one when
    it loads it)."""
    name = (model.get("model", "") if isinstance(model, dict) else str(model)).split("?")[0]
    if name in BUILTIN_MODELS:
        return builtin_spectrogram(name)
    try:
        return ModelCard.load(model_card_file(name)).spectrogram
    except (ModelError, OSError, IndexError, ValueError):
        return None


def spectrogram_branches(models: list, params: SpectrogramParams) -> list[tuple[list, SpectrogramParams]]:
    """``models`` grouped by the spectrogram their cards were trained on -> [(models,
    spectrogram)], in the order the models are given. Models without a card (``energy``)
    and models whose card matches ``params`` run on ``params``, the first branch."""
    branches = [([], params)]
    for m in models:
        grid = card_spectrogram(m) or params
        branch = next((b for b in branches if b[1] == grid), None)
        if branch is None:
            branch = ([], grid)
            branches.append(branch)
        branch[0].append(m)
    return [b for b in branches if b[0]]


def add_branches(graph, upstream, branches, merge, tile_dir: str = "", stft_device: str = "auto",
                 stft_threads: int = 0, **detector_args) -> tuple[list, list]:
    """Into ``graph`` (a top block or a hierarchical block), for each (models, spectrogram)
    of ``branches``: an STFT Tile fed by ``upstream`` and a Detector whose detections go
    to the NMS Merge ``merge``. Every model is loaded and checked before any sample flows.
    ``tile_dir``: where the Detectors write their tiles (a folder per spectrogram when there
    are several). A branch of built-in detectors with a tile height of their own runs on it
    (model_runtime.branch_tile_height); ``overlap`` (a Detector argument) is kept under each
    branch's tile height; in real-time mode each branch's ``queue_size`` and automatic
    deadline span as much of the capture as the longest tiles' (:func:`branch_queue_sizes`):
    the NMS Merge waits for those anyway. -> (STFT Tiles, Detectors)."""
    stfts, detectors = [], []
    samp_rate = float(detector_args.get("samp_rate", 0.0) or 0.0)
    heights = [branch_tile_height(models, detector_args.get("tile_height", 1024)) for models, _ in branches]
    realtime = detector_args.get("mode") == "realtime"
    queue_size = detector_args.get("queue_size", 4)
    queues = branch_queue_sizes(branches, heights, queue_size) if realtime else [queue_size] * len(branches)
    longest = max(h * p.hop for h, (_, p) in zip(heights, branches)) if realtime else 0
    for (models, p), height, queue in zip(branches, heights, queues):
        where = str(tile_dir or "")
        if where and len(branches) > 1:
            where = str(Path(where) / f"fft{p.fft_size}_hop{p.hop}")
        stft = stft_tile(p.fft_size, p.hop, p.window, p.width, p.pooling, p.normalisation, p.db_low, p.db_high,
                         samp_rate, stft_threads, stft_device)
        args = dict(detector_args, tile_height=height, queue_size=queue, deadline_period_samples=longest)
        if "overlap" in args:
            args["overlap"] = min(int(args["overlap"]), args["tile_height"] - 1)
        det = detector(models, width=p.width, tile_dir=where, **args)
        det.configure(p)
        graph.connect(upstream, stft, det)
        graph.msg_connect(det, "detections", merge, "in")
        stfts.append(stft)
        detectors.append(det)
    return stfts, detectors


def branch_queue_sizes(branches, heights: list[int], queue_size: int) -> list[int]:
    """Real-time mode: each branch's queue (``heights``: the branches' tile heights, from
    model_runtime.branch_tile_height), ``queue_size`` tiles of the branch whose tiles span the
    most samples, and as many of its own as span as much (rounded up; the whole queue holds at
    most MAX_BRANCH_QUEUE_BYTES, but never fewer than ``queue_size`` tiles). A Detector drops
    its oldest waiting tile when its queue is full: with the same number of tiles, ``pulse``'s
    65,536-sample tiles beside ``carrier``'s 2 M held 1/32 of the time, and a few hundred ms
    of another branch's work (the interpreter is shared) dropped them while the capture was
    being kept up with (docs/performance.md)."""
    spans = [h * p.hop for h, (_, p) in zip(heights, branches)]
    longest = max(spans, default=0)
    q = int(queue_size)
    return [max(q, min(-(-q * longest // span), MAX_BRANCH_QUEUE_BYTES // (h * p.width * 4)))
            for span, h, (_, p) in zip(spans, heights, branches)]


def _listed(models) -> list:
    """The Detector's ``models`` argument as a list: one comma-separated string, one entry
    (a dict or ModelSpec), or a list of entries."""
    if isinstance(models, str):
        return models.split(",")
    return [models] if isinstance(models, (dict, ModelSpec)) else list(models)


def _entry(m):
    """A model entry as ``auto``'s resolution and the cards' lookup take it: a stripped string,
    or a dict (a ModelSpec becomes its dict)."""
    if isinstance(m, ModelSpec):
        return {k: v for k, v in asdict(m).items() if v is not None}
    return m.strip() if isinstance(m, str) else m


def with_companions(companions, mode: str) -> tuple:
    """The IQ Detector's ``companions`` argument -> (whether ``auto`` runs its companions,
    whether only those that keep up in real time): "auto" in file mode (every tile is
    processed, as ``rfdetect detect`` does a recording) all of them; in real-time mode (a live
    capture) those that kept up at the capture's rate on 2 cores (AUTO_COMPANIONS' last
    field: fewer as the rate rises); True or False: all or none."""
    if isinstance(companions, str):
        said = companions.strip().lower()
        if said == "auto":
            return True, str(mode) == "realtime"
        if said in ("true", "yes", "1", "false", "no", "0"):
            return said in ("true", "yes", "1"), False
        raise ValueError(f"companions must be 'auto', True or False, not {companions!r}")
    return bool(companions), False


class iq_detector(gr.hier_block2):
    """IQ samples in, merged detections out: each model runs on the spectrogram of its
    card, one STFT Tile and Detector per spectrogram, all into one NMS Merge, the chain
    ``rfdetect detect`` builds. Nothing has to be matched by hand: where the STFT Tile and
    Detector blocks need the STFT Tile set to the model's card, this block reads the cards.

    ``models="auto"`` (the default) runs the embedded model made for the capture, chosen
    when the flowgraph is built from ``samp_rate`` and ``center_freq``: ``narrowband`` for a
    capture of at most 6.4 MS/s centred below 600 MHz (VHF/UHF land-mobile spectrum),
    ``wideband`` for any other (also when ``center_freq`` is 0, unknown: give it for VHF/UHF,
    where ``wideband`` is behind ``default``; the block warns). Set from tuning recordings
    (docs/runtime.md, "Which model `auto` runs"); on the held-out recordings
    (docs/performance.md, session 42's run), with its companions (file mode, by default:
    ``rfdetect detect``'s records) it scores 0.80-1.00 class-agnostic AP50 from 10 dB on
    every set; alone (Companions No, or real-time mode above the companions' rates) it is at or
    above ``default``, the Detector block's
    default, from 10 dB on every set (TorchSig 0.80 against 0.72, mixed 0.77, VHF/UHF 0.66).
    Its grid makes twice the tiles per second of signal: ``wideband`` sustains 15 MS/s
    in real-time mode on a 2-core EPYC, ``default`` 25, so name ``default`` for faster captures
    on a small CPU. It says what it chose in the log and in ``models``. Models without a card
    (``energy``) run on the default spectrogram (fft 4096, hop 2048, width 1024).

    Message ports: ``detections`` (tile messages with the merged records, for the Track
    Assigner), ``stats`` (each Detector's statistics).

    Args:
        models: comma-separated model entries as the Detector takes them ("auto",
            "default", "wideband", "narrowband", "energy", "pulse", a path, with options:
            "wideband?score=0.5"); "auto" may stand beside others ("auto, pulse").
        samp_rate: the capture's sample rate (S/s): picks ``auto``'s model, and is used
            until an rx_rate tag arrives. Required with "auto".
        center_freq: the capture's centre frequency (Hz), 0 if unknown: picks ``auto``'s
            model, and is used until an rx_freq tag arrives.
        companions: whether ``auto`` also runs the detectors ``rfdetect detect`` runs
            beside its network (finer grids for narrow channels and short bursts, the
            model-free pulse and carrier detectors: README "Which model"). "auto" (the
            default): in file mode, yes, so that a recording gets what ``rfdetect detect``
            gets (mixed and VHF/UHF held-out sets 0.83 from 10 dB, against 0.77 and 0.66
            for one network); in real-time mode, those that kept up at the capture's rate
            on 2 cores (AUTO_COMPANIONS' last field), fewer as the rate rises: beside
            ``narrowband`` all four up to 2.8 MS/s (about a second late as the merge waits
            for ``carrier``'s tiles), then without ``wideband-short`` up to 3.6 MS/s,
            ``pulse`` and ``carrier`` up to 4.8, ``carrier`` up to 6; ``wideband-short``
            beside ``wideband`` up to 6 MS/s; one network above (``wideband`` alone keeps up
            with 15 MS/s; docs/performance.md). ``companions`` (a tuple) names those it
            runs. True or False: always all or never.
        mode, tile_height, overlap, queue_size, deadline_s, score_threshold,
            stats_interval_s, tile_dir, profile, backend, device, precision, batch_size,
            concurrency, ignore_dc, ignore_freqs: as the Detector block's.
        nms_iou, class_aware: as the NMS Merge block's ``iou_threshold`` and
            ``class_aware``.
        stft_device, stft_threads: as the STFT Tile block's ``device`` and ``threads``.

    A model that cannot be found or loaded, and "auto" without a sample rate, raise an
    error naming it when the block is made.
    """

    def __init__(self, models="auto", samp_rate=0.0, center_freq=0.0, companions="auto", mode="file",
                 tile_height=1024, overlap=128, queue_size=4, deadline_s=-1.0, score_threshold=0.0,
                 nms_iou=0.5, class_aware=True, stats_interval_s=1.0, tile_dir="", profile="auto",
                 backend="auto", device="auto", precision="auto", batch_size=-1, concurrency="auto",
                 ignore_dc=True, ignore_freqs="", stft_device="auto", stft_threads=0):
        gr.hier_block2.__init__(self, "rfdetect IQ Detector", gr.io_signature(1, 1, gr.sizeof_gr_complex),
                                gr.io_signature(0, 0, 0))
        self.message_port_register_hier_out("detections")
        self.message_port_register_hier_out("stats")
        entries = [_entry(m) for m in _listed(models)]
        entries = [e for e in entries if e != ""]
        if any(spec.model == AUTO_MODEL for spec in parse_models(entries)) and not float(samp_rate) > 0:
            raise ModelError("model 'auto' picks the embedded model made for the capture by its sample rate: "
                             f"give the IQ Detector samp_rate (it is {samp_rate!r})")
        freq = float(center_freq) if float(center_freq) > 0 else None
        run, live = with_companions(companions, mode)
        self.models, said = resolve_auto_said(entries, float(samp_rate), freq, companions=run, realtime=live)
        # the models auto added beside its choice here: none where no entry is auto; not one
        # the entries name themselves, nor one auto's labels leave nothing to report
        asked = {ModelSpec.parse(e).model for e in entries}
        running = {ModelSpec.parse(e).model for e in self.models}
        beside = auto_models(float(samp_rate), freq, None, run, live)[1:] if said else []
        self.companions = tuple(m for m in beside if m in running and m not in asked)
        if said and live:
            left = [m for m in auto_models(float(samp_rate), freq)[1:] if m not in beside and m not in asked]
            said += (f"; companions auto in realtime mode: {', '.join(self.companions) or 'none'}"
                     + (f" (left out: {', '.join(left)}, which did not keep up at {float(samp_rate) / 1e6:g} "
                        "MS/s on 2 cores beside the others)" if left else ""))
        if said:
            gr.log.info(f"rfdetect IQ Detector: {said}")
            if freq is None and float(samp_rate) <= NARROW_CAPTURE_MAX_RATE:
                # a VHF/UHF capture would get narrowband; without a frequency it cannot be told
                gr.log.warn("rfdetect IQ Detector: Center frequency is 0 (unknown), so auto runs wideband; "
                            f"give it for a capture below {NARROW_CAPTURE_MAX_FREQ / 1e6:g} MHz, where "
                            "narrowband is made for the spectrum")
        self.branches = spectrogram_branches(self.models, SpectrogramParams())
        self.nms = nms_merge(nms_iou, class_aware)
        self.stfts, self.detectors = add_branches(
            self, self, self.branches, self.nms, tile_dir=str(tile_dir or ""), stft_device=stft_device,
            stft_threads=int(stft_threads), tile_height=int(tile_height),
            overlap=overlap, mode=mode, queue_size=queue_size,
            deadline_s=deadline_s, score_threshold=score_threshold, samp_rate=float(samp_rate),
            center_freq=float(center_freq), stats_interval_s=stats_interval_s, profile=profile,
            backend=backend, device=device, precision=precision, batch_size=batch_size,
            concurrency=concurrency, ignore_dc=ignore_dc, ignore_freqs=ignore_freqs)
        self.msg_connect(self.nms, "out", self, "detections")
        for det in self.detectors:
            self.msg_connect(det, "stats", self, "stats")

    @property
    def error(self) -> Optional[str]:
        """The first error a Detector stopped with, or None."""
        return next((d.error for d in self.detectors if d.error), None)

    def stats(self) -> list:
        """Each Detector's statistics, in branch order."""
        return [d.stats() for d in self.detectors]


__all__ = ["iq_detector", "add_branches", "branch_queue_sizes", "spectrogram_branches", "card_spectrogram",
           "with_companions", "MAX_BRANCH_QUEUE_BYTES"]
