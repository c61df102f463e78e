"""SigMF Source block: plays a SigMF recording as a complex64 stream."""
import time

import numpy as np
import pmt
from gnuradio import gr

from ..formats.sigmf_io import RecordingError, SigMFRecording

NAN_POLICIES = ("error", "zero")
LENGTH_TAG = "rfdetect_length"
# real-time playback this far behind the wall clock counts as an overrun (a USB SDR
# buffers roughly this much before it drops samples)
OVERRUN_S = 0.1
# real-time playback runs at most this far ahead of the wall clock, in pieces of this much
PACE_LEAD_S = 0.01
PACE_CHUNK_S = 0.005
MIN_OUTPUT_BUFFER = 1 << 21  # samples


class sigmf_source(gr.sync_block):
    """Plays a SigMF recording (``.sigmf-meta``/``.sigmf-data`` pair or ``.sigmf``
    archive) as complex64 samples.

    Any complex datatype (cf32_le, ci16_le, ci8, cu8, ...) is converted to complex64
    with full scale = 1.0. Tags at the first sample and at every capture boundary:
    ``rx_time`` (uint64 seconds, double fraction) from the capture's core:datetime,
    else (0, 0.0); ``rx_freq`` (core:frequency, 0 when absent); ``rx_rate``
    (core:sample_rate). Without repeat, a ``rfdetect_length`` tag at sample 0 tells
    downstream blocks how many samples will come, so the Detector can finish the last
    tile.

    Args:
        path: recording (base name, .sigmf-meta, .sigmf-data or .sigmf archive).
        repeat: start again at the end (tags are sent again).
        realtime: pace the output at the recording's sample rate, standing in for
            an SDR: pieces of PACE_CHUNK_S, at most PACE_LEAD_S ahead of the clock. ``max_lag_s`` is how far it ever fell behind the clock because
            the flowgraph did not take samples, and ``overruns`` how often it fell
            more than OVERRUN_S behind (where an SDR's buffers would overflow).
        nan_policy: "error" stops the flowgraph with a message naming the sample;
            "zero" replaces NaN/Inf samples by 0 and counts them.
    """

    def __init__(self, path="", repeat=False, realtime=False, nan_policy="error"):
        gr.sync_block.__init__(self, name="rfdetect SigMF Source", in_sig=None, out_sig=[np.complex64])
        # a small buffer makes GNU Radio hand the STFT Tile a few rows per call (a
        # Python source refills it in small steps; bench/stft.py measures both buffers)
        self.set_min_output_buffer(MIN_OUTPUT_BUFFER)
        if nan_policy not in NAN_POLICIES:
            raise ValueError(f"nan_policy={nan_policy!r} must be one of {NAN_POLICIES}")
        self.recording = SigMFRecording.open(path)
        if self.recording.n_samples == 0:
            raise RecordingError(f"{self.recording.data_path}: the recording holds no samples")
        if not self.recording.frequency_known:
            gr.log.warn(f"rfdetect SigMF Source: {self.recording.meta_path} gives no core:frequency; "
                        f"frequencies will be offsets from the centre of the band (0 Hz)")
        self.repeat = bool(repeat)
        self.realtime = bool(realtime)
        self.nan_policy = nan_policy
        self.nonfinite_replaced = 0
        self.max_lag_s = 0.0
        self.overruns = 0
        self._behind = False
        self.error = None
        self._pos = 0
        self._pass_start_item = 0
        self._t0 = None
        self._file = None
        self._boundaries = {c.sample_start: c for c in self.recording.captures}
        self._boundaries.setdefault(0, self.recording.captures[0])

    def start(self):
        self._file = open(self.recording.data_path, "rb")
        self._seek(0)
        self._t0 = None
        return True

    def stop(self):
        if self._file:
            self._file.close()
            self._file = None
        return True

    def _seek(self, pos):
        self._pos = pos
        self._file.seek(self.recording.data_offset + pos * self.recording.bytes_per_sample)

    def _tag(self, offset, key, value):
        self.add_item_tag(0, offset, pmt.intern(key), value)

    def _emit_capture_tags(self, offset, sample):
        c = self.recording.capture_at(sample)
        t = c.unix_time
        if t is not None:
            t += (sample - c.sample_start) / self.recording.sample_rate
            whole = int(t)
            rx_time = pmt.make_tuple(pmt.from_uint64(whole), pmt.from_double(t - whole))
        else:
            rx_time = pmt.make_tuple(pmt.from_uint64(0), pmt.from_double(0.0))
        self._tag(offset, "rx_time", rx_time)
        self._tag(offset, "rx_freq", pmt.from_double(c.frequency))
        self._tag(offset, "rx_rate", pmt.from_double(self.recording.sample_rate))

    def work(self, input_items, output_items):
        try:
            return self._work(output_items[0])
        except Exception as e:  # surface one clear message instead of a traceback
            self.error = str(e)
            gr.log.error(f"rfdetect SigMF Source: {e}")
            return -1

    def _work(self, out):
        rec = self.recording
        if self._pos >= rec.n_samples:
            if not self.repeat:
                return -1
            self._seek(0)
            self._pass_start_item = self.nitems_written(0)
        n = min(len(out), rec.n_samples - self._pos)
        if self.realtime:
            n = self._pace(n)
        # cf32 goes straight from the file into GNU Radio's buffer: at 20 MS/s real time
        # every copy and per-sample pass here takes CPU from the models (bench/latency.py)
        direct = rec.component == np.dtype("<f4")
        if direct:
            samples = out[:n]
            got = self._file.readinto(samples.view(np.uint8))
        else:
            raw = self._file.read(n * rec.bytes_per_sample)
            got = len(raw)
            samples = rec._convert(raw) if got == n * rec.bytes_per_sample else None
        if got < n * rec.bytes_per_sample:
            raise RecordingError(f"{rec.data_path}: truncated data: the file ended at sample "
                                 f"{self._pos + got // rec.bytes_per_sample} of {rec.n_samples}")
        if not np.isfinite(samples.view(np.float32)).all():
            bad = ~np.isfinite(samples)  # a complex value is finite when both parts are
            first = self._pos + int(np.argmax(bad))
            if self.nan_policy == "error":
                raise RecordingError(f"{rec.data_path}: sample {first} is NaN or Inf "
                                     f"(set nan_policy='zero' to replace such samples)")
            self.nonfinite_replaced += int(bad.sum())
            samples[bad] = 0
        if not direct:
            out[:n] = samples
        base = self.nitems_written(0)
        if self._pos == 0 and base == 0 and not self.repeat:
            self._tag(0, LENGTH_TAG, pmt.from_uint64(rec.n_samples))
        for start in sorted(self._boundaries):
            if self._pos <= start < self._pos + n:
                self._emit_capture_tags(base + start - self._pos, start)
        self._pos += n
        return n

    def _pace(self, n):
        """Real-time pacing: never run ahead of the wall clock by more than ``PACE_LEAD_S``,
        and hand samples over in pieces of at least ``PACE_CHUNK_S`` (as an SDR's driver
        does): handing over whatever was due made this block wake ~7,000 times a second
        at 5 MS/s for ~700 samples each, a quarter of a core (bench/latency.py)."""
        rate = self.recording.sample_rate
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = now
        written = self.nitems_written(0)
        lag = now - (self._t0 + written / rate)
        self.max_lag_s = max(self.max_lag_s, lag)
        if lag > OVERRUN_S and not self._behind:
            self.overruns += 1  # an SDR would have overflowed its buffers here
        self._behind = lag > OVERRUN_S
        piece = min(n, max(1, int(rate * PACE_CHUNK_S)))
        ready_at = self._t0 + (written + piece) / rate - PACE_LEAD_S
        if ready_at > now:
            time.sleep(min(ready_at - now, 0.05))
            now = time.monotonic()
        allowed = int((now - self._t0 + PACE_LEAD_S) * rate) - written
        return max(1, min(n, allowed))
