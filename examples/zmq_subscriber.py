#!/usr/bin/env python3
"""Subscribe to an rfdetect ZMQ PUB Sink with nothing but pyzmq and json.

    python3 examples/zmq_subscriber.py tcp://127.0.0.1:5555 [topic-prefix ...]

Topics: detection, track.new, track.update, track.end, stats (docs/schema.md).
"""
import json
import sys

import zmq


def main():
    address = sys.argv[1] if len(sys.argv) > 1 else "tcp://127.0.0.1:5555"
    topics = sys.argv[2:] or [""]
    sock = zmq.Context.instance().socket(zmq.SUB)
    sock.connect(address)
    for t in topics:
        sock.setsockopt_string(zmq.SUBSCRIBE, t)
    print(f"subscribed to {address} topics {topics}", file=sys.stderr)
    try:
        while True:
            topic, payload = sock.recv_multipart()
            rec = json.loads(payload)
            if topic == b"stats":
                print("stats", rec.get("tiles_done"), "tiles,", rec.get("tiles_dropped"), "dropped")
                continue
            print(f"{topic.decode():13s} track={rec['track_id']} {rec['label']:10s} "
                  f"{rec['t_start']:.4f}-{rec['t_stop']:.4f} s "
                  f"{rec['f_low'] / 1e6:.4f}-{rec['f_high'] / 1e6:.4f} MHz score={rec['score']:.2f}")
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
