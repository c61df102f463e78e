"""The one CUDA layer shared by the GPU STFT (dsp) and the GPU backends (inference):
CuPy, checked once it is sure the GPU asked for is there, and device names."""
from __future__ import annotations

from typing import Optional


class BackendError(RuntimeError):
    """A backend that cannot run this model here, with the reason."""


class GpuUnavailable(BackendError):
    """No CuPy, no CUDA driver, or not the GPU asked for."""


def require_cupy(index: int = 0):
    """CuPy, once it is sure GPU ``index`` is there (TensorRT buffers and streams, the GPU STFT)."""
    try:
        import cupy
    except ImportError:
        raise GpuUnavailable("CuPy is not installed (pip install cupy-cuda12x)") from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except cupy.cuda.runtime.CUDARuntimeError as e:
        raise GpuUnavailable(f"no usable CUDA driver or GPU ({e})") from None
    if index >= count:
        raise GpuUnavailable(f"GPU {index} asked for, {count} visible")
    return cupy


def cuda_index(device: str) -> Optional[int]:
    """"cuda:1" -> 1, "cuda" -> 0, "cpu" -> None; anything else is an error."""
    d = str(device).strip().lower()
    if d == "cpu":
        return None
    if d == "cuda":
        return 0
    if d.startswith("cuda:") and d[5:].isdigit():
        return int(d[5:])
    raise BackendError(f"device {device!r} must be 'cpu', 'cuda' or 'cuda:N'")
