"""Track Assigner block (message in, message out)."""
from ..tracking.track_assigner import TrackAssigner
from .message_block import MessageBlock


class track_assigner(MessageBlock):
    """Gives each signal a track ID that persists while it lasts, across tile
    boundaries, and emits ``new`` / ``update`` / ``end`` events (records in the
    rfdetect.detection/1 schema with ``event`` and ``track_id`` set).

    Gating: a detection continues a track of the same label (if class_aware; ``signal``,
    a detection whose class was uncertain, matches any label, and a ``signal`` track takes
    the first name that joins it) when it
    starts at most ``max_gap_s`` after the track's last detection ended and its
    frequency range overlaps the track's last one with IoU >= ``freq_iou_gate`` or,
    for a sweeping signal (a chirp) cut by a tile edge, covers the band both pieces
    saw in the time they share (rfdetect.formats.records.continuation).
    A track ends ``max_gap_s`` after its last detection, or at the end of the stream.

    Message ports: ``in`` (tile messages, normally from NMS Merge), ``out`` (tile
    messages whose records are the track events).
    """

    def __init__(self, freq_iou_gate=0.5, max_gap_s=0.02, class_aware=True):
        MessageBlock.__init__(self, "rfdetect Track Assigner", output=True)
        self.tracker = TrackAssigner(float(freq_iou_gate), float(max_gap_s), bool(class_aware))

    def handle(self, tile, records):
        return self.tracker.push(tile, records)
