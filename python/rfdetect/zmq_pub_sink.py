"""ZMQ PUB Sink block: publishes records and statistics as JSON."""
import pmt
from gnuradio import gr

from . import stream_end
from .messages import from_pmt
from .record_outputs import RecordPublisher, is_stats


class zmq_pub_sink(gr.basic_block):
    """Publishes every record it receives as a two-frame ZeroMQ message
    ``[topic, json]`` (schema rfdetect.detection/1, docs/schema.md). Topics:
    ``detection``, ``track.new``, ``track.update``, ``track.end`` and ``stats``; a
    subscriber picks what it wants by prefix (``track.`` gets all track events).

    It never blocks the flowgraph: sends are non-blocking, and a message that would
    exceed a subscriber's high-water mark is dropped and counted (``dropped``).

    Message ports: ``in`` (tile messages from any rfdetect block), ``stats``
    (statistics from the Detector; published with this sink's own counts and the
    end-to-end latency per tile, from its last row entering the Detector to its last
    detection leaving here: ``publisher.latency_ms``).

    Args:
        address: ZeroMQ endpoint to bind, e.g. tcp://127.0.0.1:5555 or tcp://*:5555.
        hwm: messages queued per subscriber before drops start.
    """

    def __init__(self, address="tcp://127.0.0.1:5555", hwm=10000):
        gr.basic_block.__init__(self, name="rfdetect ZMQ PUB Sink", in_sig=None, out_sig=None)
        self.publisher = RecordPublisher(address, int(hwm))
        for port, handler in (("in", self._handle), ("stats", self._handle_stats)):
            self.message_port_register_in(pmt.intern(port))
            self.set_msg_handler(pmt.intern(port), handler)

    @property
    def dropped(self):
        return self.publisher.dropped

    @property
    def sent(self):
        return self.publisher.sent

    def _handle(self, msg):
        obj = from_pmt(msg)
        if is_stats(obj):
            self.publisher.publish_stats(obj)
        else:
            tile = obj.get("tile") or {}
            self.publisher.note_tile(tile)
            self.publisher.publish(obj.get("records") or [])
            stream_end.acknowledge(tile)

    def _handle_stats(self, msg):
        self.publisher.publish_stats(from_pmt(msg))

    def stop(self):
        self.publisher.close()
        return True
