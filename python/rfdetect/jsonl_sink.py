"""JSONL Sink block: one record per line."""
import pmt
from gnuradio import gr

from . import stream_end
from .messages import parse_tile_message
from .record_outputs import JsonlWriter


class jsonl_sink(gr.basic_block):
    """Writes every record it receives as one JSON line (schema rfdetect.detection/1)
    to ``path`` as it arrives (``tail -f`` follows a run); each line is a complete
    record, and the file is fsynced and closed when the stream ends or the flowgraph
    stops.

    Args:
        path: output file.
        echo: also print each record (compact) on stdout.
    """

    def __init__(self, path="detections.jsonl", echo=False):
        gr.basic_block.__init__(self, name="rfdetect JSONL Sink", in_sig=None, out_sig=None)
        self.writer = JsonlWriter(path)
        self.echo = bool(echo)
        self.message_port_register_in(pmt.intern("in"))
        self.set_msg_handler(pmt.intern("in"), self._handle)

    def _handle(self, msg):
        tile, records = parse_tile_message(msg)
        self.writer.add(records)
        if self.echo:
            from .records import format_record
            try:
                for r in records:
                    print(format_record(r), flush=True)
            except OSError as e:  # stdout closed (`rfdetect detect ... | head`): keep writing the file
                self.echo = False
                gr.log.warn(f"rfdetect JSONL Sink: stdout is gone ({e}); records still go to {self.writer.path}")
        if tile.get("final"):
            self.writer.commit()
        stream_end.acknowledge(tile)

    def stop(self):
        self.writer.commit()
        return True
