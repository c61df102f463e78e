"""NMS Merge block (message in, message out)."""
import pmt
from gnuradio import gr

from . import stream_end
from .messages import parse_tile_message, tile_message
from .nms_merge import NmsMerger


class nms_merge(gr.basic_block):
    """Removes duplicate detections across models and across overlapping tiles, by
    IoU in (time, frequency), and stitches pieces of one signal cut by a tile edge.
    See rfdetect.nms_merge for the exact rules.

    Message ports: ``in`` (tile messages from the Detector), ``out`` (tile messages
    with the merged records; a record is held back for at most one tile).

    Args:
        iou_threshold: IoU at or above which two records are the same signal.
        class_aware: only records with the same label suppress each other; "signal"
            (the label of a localised signal whose class is uncertain, and the energy
            detector's) matches any label, and the kept record takes the known name.
        stitch: join pieces of one signal cut by a tile edge.
    """

    def __init__(self, iou_threshold=0.5, class_aware=True, stitch=True):
        gr.basic_block.__init__(self, name="rfdetect NMS Merge", in_sig=None, out_sig=None)
        self.merger = NmsMerger(float(iou_threshold), bool(class_aware), bool(stitch))
        self.message_port_register_in(pmt.intern("in"))
        self.message_port_register_out(pmt.intern("out"))
        self.set_msg_handler(pmt.intern("in"), self._handle)

    def _handle(self, msg):
        tile, records = parse_tile_message(msg)
        out = self.merger.push(tile, records)
        stream_end.announce(self, tile, ["out"])
        self.message_port_pub(pmt.intern("out"), tile_message(tile, out))
        stream_end.acknowledge(tile)
