"""SigMF Annotation Sink block: writes detections as SigMF annotations."""
from gnuradio import gr

from ..formats.record_outputs import AnnotationWriter
from .message_block import MessageBlock


class sigmf_annotation_sink(MessageBlock):
    """Writes every detection (and track new/update event) it receives as a SigMF
    annotation: core:sample_start, core:sample_count, core:freq_lower_edge,
    core:freq_upper_edge, core:label, plus rfdetect:score, rfdetect:model,
    rfdetect:track_id, rfdetect:snr_db.

    Memory stays bounded however long it runs: each annotation is appended to the
    journal ``path.sigmf-meta.journal`` as it arrives, and ``path.sigmf-meta`` (sorted
    annotations, written atomically, never half-written) is built from the journal at
    the end of the stream or when the flowgraph stops (also on Ctrl-C in a
    grcc-generated script). After a crash, the journal is recovered aside when a sink
    starts again on the same path, or by ``rfdetect recover path.sigmf-meta.journal``
    (docs/reliability.md).

    Args:
        path: output base name (``path.sigmf-meta`` / ``path.sigmf-data``).
        source: the recording being played (its global/captures/annotations are
            copied and its data hard-linked or copied); empty for a live SDR, which
            gives a metadata-only file.
        samp_rate, center_freq: for the metadata-only file.
        flush_interval_s: seconds between fsyncs of the journal (what a power cut can
            lose at most; a crash of the process loses nothing written).
    """

    def __init__(self, path="detections", source="", samp_rate=0.0, center_freq=0.0, flush_interval_s=5.0):
        MessageBlock.__init__(self, "rfdetect SigMF Annotation Sink", output=False)
        self.writer = AnnotationWriter(path, source or None, float(samp_rate), float(center_freq),
                                       sync_interval_s=float(flush_interval_s))
        rec = self.writer.recovered
        if rec and "error" in rec:
            gr.log.warn(f"rfdetect SigMF Annotation Sink: a journal left by a run that did not stop cleanly "
                        f"could not be recovered: {rec['error']}")
        elif rec:
            gr.log.warn(f"rfdetect SigMF Annotation Sink: a journal left by a run that did not stop cleanly was "
                        f"recovered as {rec['meta']} ({rec['annotations']} annotations)")

    def handle(self, tile, records):
        self.writer.add(records)
        if tile.get("final"):
            self.writer.finalise()

    def flush(self):
        self.writer.flush()

    def stop(self):
        self.writer.finalise()
        return True
