"""Track Assigner block (message in, message out)."""
import pmt
from gnuradio import gr

from . import stream_end
from .messages import parse_tile_message, tile_message
from .track_assigner import TrackAssigner


class track_assigner(gr.basic_block):
    """Gives each signal a track ID that persists while it lasts, across tile
    boundaries, and emits ``new`` / ``update`` / ``end`` events (records in the
    rfdetect.detection/1 schema with ``event`` and ``track_id`` set).

    Gating: a detection continues a track of the same label (if class_aware) when it
    starts at most ``max_gap_s`` after the track's last detection ended and its
    frequency range overlaps the track's last one with IoU >= ``freq_iou_gate`` or,
    for a sweeping signal (a chirp) cut by a tile edge, covers the band both pieces
    saw in the time they share (rfdetect.records.continuation).
    A track ends ``max_gap_s`` after its last detection, or at the end of the stream.

    Message ports: ``in`` (tile messages, normally from NMS Merge), ``out`` (tile
    messages whose records are the track events).
    """

    def __init__(self, freq_iou_gate=0.5, max_gap_s=0.02, class_aware=True):
        gr.basic_block.__init__(self, name="rfdetect Track Assigner", in_sig=None, out_sig=None)
        self.tracker = TrackAssigner(float(freq_iou_gate), float(max_gap_s), bool(class_aware))
        self.message_port_register_in(pmt.intern("in"))
        self.message_port_register_out(pmt.intern("out"))
        self.set_msg_handler(pmt.intern("in"), self._handle)

    def _handle(self, msg):
        tile, records = parse_tile_message(msg)
        events = self.tracker.push(tile, records)
        stream_end.announce(self, tile, ["out"])
        self.message_port_pub(pmt.intern("out"), tile_message(tile, events))
        stream_end.acknowledge(tile)
