"""SigMF Annotation Sink block: writes detections as SigMF annotations."""
import time

import pmt
from gnuradio import gr

from . import stream_end
from .messages import parse_tile_message
from .record_outputs import AnnotationWriter


class sigmf_annotation_sink(gr.basic_block):
    """Writes every detection (and track new/update event) it receives as a SigMF
    annotation: core:sample_start, core:sample_count, core:freq_lower_edge,
    core:freq_upper_edge, core:label, plus rfdetect:score, rfdetect:model,
    rfdetect:track_id, rfdetect:snr_db.

    The ``.sigmf-meta`` is rewritten atomically (sorted annotations; never a
    half-written file) every ``flush_interval_s`` seconds, at the end of the stream,
    and when the flowgraph stops (also on Ctrl-C in a grcc-generated script).

    Args:
        path: output base name (``path.sigmf-meta`` / ``path.sigmf-data``).
        source: the recording being played (its global/captures/annotations are
            copied and its data hard-linked or copied); empty for a live SDR, which
            gives a metadata-only file.
        samp_rate, center_freq: for the metadata-only file.
        flush_interval_s: seconds between rewrites while running.
    """

    def __init__(self, path="detections", source="", samp_rate=0.0, center_freq=0.0, flush_interval_s=5.0):
        gr.basic_block.__init__(self, name="rfdetect SigMF Annotation Sink", in_sig=None, out_sig=None)
        self.writer = AnnotationWriter(path, source or None, float(samp_rate), float(center_freq))
        self.flush_interval_s = float(flush_interval_s)
        self._last = time.monotonic()
        self.message_port_register_in(pmt.intern("in"))
        self.set_msg_handler(pmt.intern("in"), self._handle)

    def _handle(self, msg):
        tile, records = parse_tile_message(msg)
        self.writer.add(records)
        now = time.monotonic()
        if tile.get("final") or (self.writer.dirty and now - self._last >= self.flush_interval_s):
            self.writer.flush()
            self._last = now
        stream_end.acknowledge(tile)

    def flush(self):
        self.writer.flush()

    def stop(self):
        self.writer.flush()
        return True
