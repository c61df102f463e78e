"""Hardware profiles: which backend, device, precision and batch size to use here.

Three profiles, detected automatically (:func:`detect_profile`):

=============  =====================================  =========  =====  =======
profile        backends, in order of preference        device     prec.  batch
=============  =====================================  =========  =====  =======
jetson         tensorrt, onnxruntime, pytorch          cuda:0     fp16   4
desktop-gpu    tensorrt, onnxruntime, pytorch          cuda:0     fp16   0 (from free memory)
cpu            onnxruntime, pytorch                    cpu        fp32   1
=============  =====================================  =========  =====  =======

``threads`` (CPU threads of one model's ONNX Runtime or PyTorch session): every core this
process may use in the ``cpu`` profile (0), one on GPU machines (the CPU path there is a
fallback beside the GPU's work); RFDETECT_THREADS=N overrides it. On the 2-core CPU, 20 MS/s
real-time playback of the default model: 47-57 ms per tile (p50) at 2 threads, no tile dropped
(bench/latency.py, docs/performance.md); 68 ms at one thread at 5 MS/s.

Each field can be overridden, most specific first: a block or CLI parameter (when it
is not "auto"), then an environment variable (RFDETECT_PROFILE, RFDETECT_BACKEND,
RFDETECT_DEVICE, RFDETECT_PRECISION, RFDETECT_BATCH), then the profile. A grcc-compiled
flowgraph on a Jetson can thus be retargeted without editing it.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Mapping, Optional

log = logging.getLogger("rfdetect.profile")

BACKENDS = ("tensorrt", "onnxruntime", "pytorch")
PRECISIONS = ("fp32", "fp16")
AUTO = ("", "auto", None)


@dataclasses.dataclass(frozen=True)
class Profile:
    name: str
    backends: tuple
    device: str
    precision: str
    batch_size: int  # 0: as many frequency chunks as free GPU memory allows
    threads: int = 1  # CPU threads per model session; 0: all cores

    def with_overrides(self, backend=None, device=None, precision=None, batch_size=None,
                       threads=None) -> "Profile":
        """This profile with the given fields replaced (None/"auto": keep), validated."""
        changes = {}
        if backend not in AUTO:
            if backend not in BACKENDS:
                raise ProfileError(f"backend {backend!r} is not one of {BACKENDS}")
            changes["backends"] = (backend,)
        if device not in AUTO:
            device = f"cuda:{device}" if str(device).isdigit() else str(device)  # RFDETECT_DEVICE=1
            from ..gpu import BackendError, cuda_index
            try:
                cuda_index(device)
            except BackendError as e:
                raise ProfileError(str(e)) from None
            changes["device"] = device
        if precision not in AUTO:
            if precision not in PRECISIONS:
                raise ProfileError(f"precision {precision!r} is not one of {PRECISIONS}")
            changes["precision"] = precision
        if batch_size is not None:
            if int(batch_size) < 0:
                raise ProfileError(f"batch size {batch_size} must be >= 0 (0: from free memory)")
            changes["batch_size"] = int(batch_size)
        if threads not in AUTO:
            if int(threads) < 0:
                raise ProfileError(f"threads {threads} must be >= 0 (0: all cores)")
            changes["threads"] = int(threads)
        return dataclasses.replace(self, **changes)

    @property
    def cpu_threads(self) -> int:
        """Threads for one model's CPU session: ``threads``, or every core for 0."""
        if self.threads:
            return self.threads
        try:  # the cores this process may run on (a container or taskset may give fewer)
            return len(os.sched_getaffinity(0)) or 1
        except AttributeError:  # not Linux
            return os.cpu_count() or 1

    def describe(self) -> str:
        return (f"profile {self.name}: backends {'>'.join(self.backends)}, device {self.device}, "
                f"{self.precision}, batch {self.batch_size or 'auto'}, {self.cpu_threads} CPU thread(s) per model")


PROFILES = {
    "jetson": Profile("jetson", ("tensorrt", "onnxruntime", "pytorch"), "cuda:0", "fp16", 4),
    "desktop-gpu": Profile("desktop-gpu", ("tensorrt", "onnxruntime", "pytorch"), "cuda:0", "fp16", 0),
    "cpu": Profile("cpu", ("onnxruntime", "pytorch"), "cpu", "fp32", 1, threads=0),
}


class ProfileError(ValueError):
    pass


def is_jetson(root: str = "/") -> bool:
    r = Path(root)
    if (r / "etc/nv_tegra_release").is_file():
        return True
    model = r / "proc/device-tree/model"
    try:
        return "jetson" in model.read_bytes().decode(errors="replace").lower()
    except OSError:
        return False


def cuda_gpu_count(root: str = "/") -> int:
    """NVIDIA GPUs the driver exposes, read from /proc (no CUDA library loaded)."""
    gpus = Path(root) / "proc/driver/nvidia/gpus"
    try:
        return sum(1 for _ in gpus.iterdir())
    except OSError:
        return 0


def detect_profile(root: str = "/") -> str:
    if is_jetson(root):
        return "jetson"
    if cuda_gpu_count(root) > 0:
        return "desktop-gpu"
    return "cpu"


def resolve_profile(profile: Optional[str] = None, backend: Optional[str] = None,
                    device: Optional[str] = None, precision: Optional[str] = None,
                    batch_size: Optional[int] = None, env: Optional[Mapping[str, str]] = None,
                    root: str = "/", threads: Optional[int] = None) -> Profile:
    """The profile in effect: parameters (unless auto) > environment > detected profile."""
    env = os.environ if env is None else env

    def pick(param, var):
        if param not in AUTO:
            return param
        v = env.get(var, "").strip()
        return v or None

    name = pick(profile, "RFDETECT_PROFILE") or detect_profile(root)
    if name not in PROFILES:
        raise ProfileError(f"profile {name!r} is not one of {sorted(PROFILES)}")
    batch = pick(batch_size, "RFDETECT_BATCH")
    try:
        batch = None if batch is None else int(batch)
    except ValueError:
        raise ProfileError(f"RFDETECT_BATCH={batch!r} is not an integer") from None
    n_threads = pick(threads, "RFDETECT_THREADS")
    try:
        n_threads = None if n_threads is None else int(n_threads)
    except ValueError:
        raise ProfileError(f"RFDETECT_THREADS={n_threads!r} is not an integer") from None
    return PROFILES[name].with_overrides(pick(backend, "RFDETECT_BACKEND"), pick(device, "RFDETECT_DEVICE"),
                                         pick(precision, "RFDETECT_PRECISION"), batch, n_threads)


def env_score_threshold(env: Optional[Mapping[str, str]] = None) -> Optional[float]:
    """RFDETECT_SCORE_THRESHOLD: replaces every model card's score threshold."""
    env = os.environ if env is None else env
    v = env.get("RFDETECT_SCORE_THRESHOLD", "").strip()
    if not v:
        return None
    try:
        x = float(v)
    except ValueError:
        raise ProfileError(f"RFDETECT_SCORE_THRESHOLD={v!r} is not a number") from None
    if not 0.0 <= x <= 1.0:
        raise ProfileError(f"RFDETECT_SCORE_THRESHOLD={v} must be in [0, 1]")
    return x
