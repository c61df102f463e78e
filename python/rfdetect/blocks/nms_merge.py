"""NMS Merge block (message in, message out)."""
from ..tracking.nms_merge import NmsMerger
from .message_block import MessageBlock


class nms_merge(MessageBlock):
    """Removes duplicate detections across models and across overlapping tiles, by
    IoU in (time, frequency), and stitches pieces of one signal cut by a tile edge.
    See rfdetect.tracking.nms_merge for the exact rules.

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
        MessageBlock.__init__(self, "rfdetect NMS Merge", output=True)
        self.merger = NmsMerger(float(iou_threshold), bool(class_aware), bool(stitch))

    def handle(self, tile, records):
        return self.merger.push(tile, records)
