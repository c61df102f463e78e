"""gr-rfdetect: real-time RF signal detection for GNU Radio.

The DSP, I/O, detection, merging and tracking logic imports without GNU Radio
(NumPy/SciPy only); the GNU Radio blocks are thin shells over it and are exported
here only when GNU Radio is importable.
"""
__version__ = "0.1.0"

from .spectrogram import SpectrogramParams, SpectrogramEngine, spectrogram  # noqa: F401
from .sigmf_io import RecordingError, SigMFRecording  # noqa: F401

try:
    from gnuradio import gr as _gr  # noqa: F401
except ImportError:  # training boxes and other programs without GNU Radio
    pass
else:
    from .sigmf_source import sigmf_source  # noqa: F401
    from .stft_tile import stft_tile  # noqa: F401
    from .detector import detector  # noqa: F401
    from .nms_merge_block import nms_merge  # noqa: F401
    from .track_assigner_block import track_assigner  # noqa: F401
    from .zmq_pub_sink import zmq_pub_sink  # noqa: F401
    from .sigmf_annotation_sink import sigmf_annotation_sink  # noqa: F401
    from .jsonl_sink import jsonl_sink  # noqa: F401
