"""Makes sure every rfdetect message block handles the final tile message.

GNU Radio ends a message-only block as soon as its upstream neighbours report done,
checking its ports one after another; a message that arrives together with that
"done" can be left in the queue unhandled (seen here: the ZMQ sink missed the last
track "end" event about one run in three). Messages are therefore not enough to end a
run cleanly.

Instead, the final tile message carries a run token. The Detector says how many
rfdetect blocks subscribe to it, each rfdetect block that forwards the final message
adds its own subscribers before forwarding and counts itself off after, and the
Detector holds its last ``work()`` call (so nothing downstream can be told "done")
until the count reaches zero. Subscribers that are not rfdetect blocks (Message
Debug, say) are not waited for.
"""
import threading
import uuid

import pmt

_cond = threading.Condition()
_pending: dict[str, int] = {}


def new_run_token() -> str:
    return uuid.uuid4().hex


def rfdetect_subscribers(block, port: str) -> int:
    """How many rfdetect blocks are connected to ``block``'s message ``port``."""
    subs = block.to_basic_block().message_subscribers(pmt.intern(port))
    n = 0
    for i in range(pmt.length(subs)):
        alias = pmt.symbol_to_string(pmt.car(pmt.nth(i, subs)))
        n += alias.startswith("rfdetect ")
    return n


def announce(block, tile: dict, ports) -> None:
    """Before publishing a final tile message: expect its rfdetect subscribers."""
    run = tile.get("run") if tile.get("final") else None
    if run:
        n = sum(rfdetect_subscribers(block, p) for p in ports)
        with _cond:
            _pending[run] = _pending.get(run, 0) + n
            _cond.notify_all()


def acknowledge(tile: dict) -> None:
    """After handling (and forwarding) a final tile message."""
    run = tile.get("run") if tile.get("final") else None
    if run:
        with _cond:
            _pending[run] = _pending.get(run, 0) - 1
            _cond.notify_all()


def wait_handled(run: str, timeout: float) -> bool:
    """Block until every announced rfdetect block handled the final message of ``run``."""
    with _cond:
        ok = _cond.wait_for(lambda: _pending.get(run, 0) <= 0, timeout)
        _pending.pop(run, None)
        return ok
