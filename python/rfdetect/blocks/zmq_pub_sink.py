"""ZMQ PUB Sink block: publishes records and statistics as JSON."""
from ..formats.record_outputs import RecordPublisher
from .message_block import MessageBlock


class zmq_pub_sink(MessageBlock):
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
        MessageBlock.__init__(self, "rfdetect ZMQ PUB Sink", output=False, stats_port=True)
        self.publisher = RecordPublisher(address, int(hwm))

    @property
    def dropped(self):
        return self.publisher.dropped

    @property
    def sent(self):
        return self.publisher.sent

    def handle(self, tile, records):
        self.publisher.note_tile(tile)
        self.publisher.publish(records)

    def handle_stats(self, stats):
        self.publisher.publish_stats(stats)

    def stop(self):
        self.publisher.close()
        return True
