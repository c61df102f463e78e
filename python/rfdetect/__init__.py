"""gr-rfdetect: real-time RF signal detection for GNU Radio.

The DSP, I/O, detection, merging and tracking logic imports without GNU Radio
(NumPy/SciPy only); the GNU Radio blocks are thin shells over it and are exported
here only when GNU Radio is importable.
"""
__version__ = "0.1.0"

from .dsp.spectrogram import SpectrogramParams, SpectrogramEngine, spectrogram  # noqa: F401
from .formats.sigmf_io import RecordingError, SigMFRecording  # noqa: F401

try:
    from gnuradio import gr as _gr  # noqa: F401
except ImportError:  # training boxes and other programs without GNU Radio
    pass
else:
    from .blocks.sigmf_source import sigmf_source  # noqa: F401
    from .blocks.stft_tile import stft_tile  # noqa: F401
    from .blocks.detector import detector  # noqa: F401
    from .blocks.iq_detector import iq_detector  # noqa: F401
    from .blocks.nms_merge import nms_merge  # noqa: F401
    from .blocks.track_assigner import track_assigner  # noqa: F401
    from .blocks.zmq_pub_sink import zmq_pub_sink  # noqa: F401
    from .blocks.sigmf_annotation_sink import sigmf_annotation_sink  # noqa: F401
    from .blocks.jsonl_sink import jsonl_sink  # noqa: F401
