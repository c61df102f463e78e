"""The shell every rfdetect message-in block shares (NMS Merge, Track Assigner and the
three sinks): tile messages arrive on ``in``; what the block's plain object returns goes
out on ``out`` as tile messages (one with the same tile, unless the block says otherwise);
the final tile of a file run is announced to the blocks downstream and acknowledged
(``stream_end``), so that the Detector knows when every block has handled it."""
import pmt
from gnuradio import gr

from ..formats.record_outputs import is_stats
from . import stream_end
from .messages import from_pmt, tile_message


class MessageBlock(gr.basic_block):
    """Subclasses implement :meth:`handle` and, to take the Detector's statistics,
    :meth:`handle_stats` (``stats_port=True`` adds a ``stats`` input for them; statistics
    that arrive on ``in`` go there too)."""

    def __init__(self, name: str, output: bool, stats_port: bool = False):
        gr.basic_block.__init__(self, name=name, in_sig=None, out_sig=None)
        self._output = output
        self.message_port_register_in(pmt.intern("in"))
        self.set_msg_handler(pmt.intern("in"), self._on_message)
        if stats_port:
            self.message_port_register_in(pmt.intern("stats"))
            self.set_msg_handler(pmt.intern("stats"), self._on_stats)
        if output:
            self.message_port_register_out(pmt.intern("out"))

    def handle(self, tile: dict, records: list):
        """One tile's records in; the records to forward out (ignored by a sink)."""
        raise NotImplementedError

    def forwarded_tile(self, tile: dict) -> dict:
        """The tile to send out with :meth:`handle`'s records (the same one unless overridden)."""
        return tile

    def handle_messages(self, tile: dict, records: list) -> list:
        """One tile's records in; the tile messages to send out, as (tile, records): by default
        one, :meth:`forwarded_tile` with :meth:`handle`'s records. A block may send none or
        several (NMS Merge, which merges the tiles of several Detectors in time order)."""
        out = self.handle(tile, records)
        return [(self.forwarded_tile(tile), out)]

    def forwarded(self, tile: dict) -> None:
        """Called after ``tile`` (from :meth:`forwarded_tile`) went out."""

    def handle_hello(self, hello: dict) -> None:
        """A Detector connected to ``in`` says it is there (before its first tile); ignored
        unless overridden."""

    def handle_stats(self, stats: dict) -> None:
        """Statistics from the Detector (rfdetect.stats/1); dropped unless overridden."""

    # GNU Radio finds a Python message handler by its name on the block: methods, not lambdas
    def _on_stats(self, msg):
        self.handle_stats(from_pmt(msg))

    def _on_message(self, msg):
        obj = from_pmt(msg)
        if is_stats(obj):
            self.handle_stats(obj)
            return
        if "hello" in obj:
            self.handle_hello(obj["hello"] or {})
            return
        tile = obj.get("tile") or {}
        try:
            for forward, out in self.handle_messages(tile, [dict(r) for r in (obj.get("records") or [])]):
                if self._output:
                    stream_end.announce(self, forward, ["out"])
                    self.message_port_pub(pmt.intern("out"), tile_message(forward, out))
                    self.forwarded(forward)
        finally:
            # even when handle() fails: the Detector would wait for this block until its deadline
            stream_end.acknowledge(tile)
