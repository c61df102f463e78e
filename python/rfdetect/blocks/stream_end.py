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

Several Detectors into one NMS Merge (models of different spectrograms): GNU Radio
also ends a message-only block when the first of its upstream neighbours is done, so a
Detector whose branch ends first must not be done before the others. The NMS Merge
holds each final tile's run (:func:`hold`) until every input's final has arrived, then
forwards one final tile carrying all their runs (``"run"`` is then a list) and releases
them: each Detector waits until the whole run is handled downstream. While the merger
still works on tiles of other branches (:func:`touch`), a waiting Detector's deadline
moves on with it.
"""
import threading
import uuid

import pmt

_cond = threading.Condition()
_pending: dict[str, int] = {}
# per run: how often a block that holds it reported progress (touch)
_activity: dict[str, int] = {}


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


def runs(tile: dict) -> list:
    """The run tokens a final tile message carries (one per Detector it ends); [] otherwise."""
    run = tile.get("run") if tile.get("final") else None
    return ([run] if isinstance(run, str) else list(run)) if run else []


def _add(tokens, n: int) -> None:
    if tokens and n:
        with _cond:
            for run in tokens:
                _pending[run] = _pending.get(run, 0) + n
            _cond.notify_all()


def announce(block, tile: dict, ports) -> None:
    """Before publishing a final tile message: expect its rfdetect subscribers."""
    tokens = runs(tile)
    if tokens:
        _add(tokens, sum(rfdetect_subscribers(block, p) for p in ports))


def acknowledge(tile: dict) -> None:
    """After handling (and forwarding) a final tile message."""
    _add(runs(tile), -1)


def hold(tokens) -> None:
    """Keep the Detectors of ``tokens`` waiting until :func:`release`."""
    _add(tokens, 1)


def release(tokens) -> None:
    _add(tokens, -1)


def touch(tokens) -> None:
    """Progress on a run held here: its Detector's deadline starts again."""
    with _cond:
        for run in tokens:
            _activity[run] = _activity.get(run, 0) + 1


def wait_handled(run: str, timeout: float) -> bool:
    """Block until every announced rfdetect block handled the final message of ``run``:
    False after ``timeout`` seconds in which nothing was handled and no block holding
    the run reported progress."""
    with _cond:
        while True:
            seen = _activity.get(run, 0)
            if _cond.wait_for(lambda: _pending.get(run, 0) <= 0, timeout):
                ok = True
                break
            if _activity.get(run, 0) == seen:
                ok = False
                break
        _pending.pop(run, None)
        _activity.pop(run, None)
        return ok
