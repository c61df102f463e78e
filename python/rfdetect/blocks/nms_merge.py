"""NMS Merge block (message in, message out)."""
from ..tracking.nms_merge import NmsMerger
from . import stream_end
from .message_block import MessageBlock


class nms_merge(MessageBlock):
    """Removes duplicate detections across models and across overlapping tiles, by
    IoU in (time, frequency), and stitches pieces of one signal cut by a tile edge.
    See rfdetect.tracking.nms_merge for the exact rules.

    Message ports: ``in`` (tile messages from the Detector), ``out`` (tile messages
    with the merged records).

    Args:
        iou_threshold: IoU at or above which two records are the same signal.
        class_aware: only records of two models with the same label suppress each other or
            are stitched; "signal" (the label of a localised signal whose class is
            uncertain, and the energy detector's) matches any label, and the kept record
            takes the known name. One model's records are one signal whatever it names them
            where their IoU reaches ``iou_threshold`` or they are pieces cut by a tile edge
            (the larger piece names the join), and a cut piece over the same band inside a
            record of another tile goes whatever its label (a partial view); inside a record
            of another band, only of the same label.
        stitch: join pieces of one signal cut by a tile edge.
        long_signals: how a signal longer than a tile leaves: "whole" (held until it
            ends: one record, one SigMF annotation), "pieces" (held no longer than the
            tile after the one it ends in, the lowest latency: pieces of up to two tiles that the Track
            Assigner joins under one track ID), or "auto" (default): whole when the
            Detector runs a file, in pieces in real-time mode.

    Several Detectors may be connected to ``in`` (models trained on different spectrograms
    each need their own STFT Tile and Detector). Each says so when the flowgraph starts,
    so the merger knows how many there are. Each Detector's records are stitched and
    merged on their own, as for a lone Detector; then they are held until every Detector
    has passed their time, and duplicates across Detectors are merged. The tiles are merged
    in time order, whichever Detector runs faster, so the records out and the tile messages
    they leave in are the same on every run of a recording. The run ends when every
    Detector's has.
    """

    def __init__(self, iou_threshold=0.5, class_aware=True, stitch=True, long_signals="auto"):
        MessageBlock.__init__(self, "rfdetect NMS Merge", output=True)
        self.merger = NmsMerger(float(iou_threshold), bool(class_aware), bool(stitch), long_signals=str(long_signals))
        self._runs: list = []  # the final tiles' runs held until every input's has come (stream_end)

    def handle_hello(self, hello):
        self.merger.add_input(str(hello.get("stream", "")))

    def handle_messages(self, tile, records):
        out = self.merger.push_tiles(tile, records)
        if self.merger.inputs > 1:
            stream_end.touch(self._runs)
            if tile.get("final"):
                new = stream_end.runs(tile)
                stream_end.hold(new)
                self._runs += new
            for fwd, _ in out:
                if fwd.get("final"):
                    fwd["run"] = list(self._runs)
        return out

    def forwarded(self, tile):
        if self.merger.inputs > 1 and tile.get("final"):
            stream_end.release(self._runs)
            self._runs = []
