"""JSONL Sink block: one record per line."""
from gnuradio import gr

from ..formats.record_outputs import JsonlWriter
from ..formats.records import format_record
from .message_block import MessageBlock


class jsonl_sink(MessageBlock):
    """Writes every record it receives as one JSON line (schema rfdetect.detection/1)
    to ``path`` as it arrives (``tail -f`` follows a run); each line is a complete
    record, and the file is fsynced and closed when the stream ends or the flowgraph
    stops.

    Args:
        path: output file.
        echo: also print each record (compact) on stdout.
    """

    def __init__(self, path="detections.jsonl", echo=False):
        MessageBlock.__init__(self, "rfdetect JSONL Sink", output=False)
        self.writer = JsonlWriter(path)
        self.echo = bool(echo)

    def handle(self, tile, records):
        self.writer.add(records)
        if self.echo:
            try:
                for r in records:
                    print(format_record(r), flush=True)
            except OSError as e:  # stdout closed (`rfdetect detect ... | head`): keep writing the file
                self.echo = False
                gr.log.warn(f"rfdetect JSONL Sink: stdout is gone ({e}); records still go to {self.writer.path}")
        if tile.get("final"):
            self.writer.commit()

    def stop(self):
        self.writer.commit()
        return True
