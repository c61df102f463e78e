"""Inference backends: one interface over ONNX Runtime, PyTorch and TensorRT.

A backend runs a network and nothing else: ``run(feed, outputs) -> [np.ndarray]``
with ``feed`` a dict of float32 NumPy arrays by input name. Pre- and
post-processing live in :mod:`rfdetect.inference.postprocess`, so every backend gives the same
detections from the same network (the tests compare them).

Every backend has ``kind``, ``path``, ``device`` ("cpu" or "cuda:N"), ``precision``
("fp32" or "fp16"), ``input_names``, ``output_names``, ``batch_dynamic`` (whether
the first input dimension may vary) and ``memory()`` (GPU bytes in use and peak, or
{} on the CPU). TensorRT lives in :mod:`rfdetect.inference.tensorrt_backend`.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Optional

import numpy as np

from ..gpu import BackendError, GpuUnavailable, cuda_index
from .model_card import ModelError

# metadata stored inside a PyTorch archive (torch.export extra file)
TORCH_META = "rfdetect.json"
ORT_MISSING = ("ONNX Runtime is not installed here: pip install 'gr-rfdetect[cpu]' (or, with a GPU, "
               "'gr-rfdetect[gpu]'; on a Jetson keep NVIDIA's onnxruntime-gpu wheel)")
log = logging.getLogger("rfdetect.models")


def excess_error(ref, got, rtol: float) -> float:
    """Largest ``|got - ref| - rtol*|ref|`` (0 when every element is within rtol): the
    one measure export and engine checks compare with their absolute tolerance."""
    ref = np.asarray(ref, dtype=np.float64)
    return float((np.abs(ref - np.asarray(got, dtype=np.float64)) - rtol * np.abs(ref)).max(initial=0.0))


def run_in_batches(run, feed: dict, outputs: list, max_batch: int) -> list:
    """``run(feed, outputs)`` on at most ``max_batch`` items of the first dimension at a
    time, the outputs joined along it: for a network that takes fewer items per call
    (a TensorRT profile's maximum) than a tile brings (crops, frequency chunks). Every
    input and output must carry the items on its first dimension."""
    sizes = {name: len(x) for name, x in feed.items()}
    n = next(iter(sizes.values()))
    if any(v != n for v in sizes.values()):
        raise BackendError(f"inputs differ in their first dimension {sizes}: cannot split them into batches")
    if n <= max_batch:
        return run(feed, outputs)
    parts = [run({name: x[a:a + max_batch] for name, x in feed.items()}, outputs)
             for a in range(0, n, max_batch)]
    return [np.concatenate(outs) for outs in zip(*parts)]


def ort_engine_cache_dir(model_path, ort_version: str) -> Path:
    """Where ONNX Runtime's TensorRT provider keeps the engines it builds for one model:
    RFDETECT_CACHE_DIR (else $XDG_CACHE_HOME/rfdetect, else ~/.cache/rfdetect)
    /ort-tensorrt/ort<version>/<stem>-<hash of the model's bytes>. Its own file names
    carry the GPU's compute capability; the ONNX Runtime version and the model's hash
    keep a changed model or runtime from picking up an engine built for another (a
    TensorRT upgrade alone is not seen: clear the folder after one)."""
    root = os.environ.get("RFDETECT_CACHE_DIR") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rfdetect"
    model_path = Path(model_path)
    digest = hashlib.sha256(model_path.read_bytes()).hexdigest()[:16]
    return Path(root) / "ort-tensorrt" / f"ort{ort_version}" / f"{model_path.stem}-{digest}"


def onnx_providers(available, gpu: Optional[int], precision: str, model_path, ort_version: str) -> list:
    """ONNX Runtime's execution providers for a model, best first: on a GPU device the
    TensorRT provider (its engine cache on, so the engine it builds at the first start
    -- minutes on a Jetson -- is reused by the next) and the CUDA provider where this
    build has them; the CPU provider always."""
    providers = []
    if gpu is not None:
        if "TensorrtExecutionProvider" in available:
            opts = {"device_id": gpu, "trt_fp16_enable": precision == "fp16"}
            try:
                cache = ort_engine_cache_dir(model_path, ort_version)
                cache.mkdir(parents=True, exist_ok=True)
                opts.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(cache))
            except OSError as e:  # a read-only home on a field box: run, but say it rebuilds
                log.warning("ONNX Runtime's TensorRT engines for %s are not cached (%s): each start "
                            "rebuilds them; set RFDETECT_CACHE_DIR to a writable folder", model_path, e)
            providers.append(("TensorrtExecutionProvider", opts))
        if "CUDAExecutionProvider" in available:
            providers.append(("CUDAExecutionProvider", {"device_id": gpu}))
    providers.append("CPUExecutionProvider")
    return providers


class OnnxBackend:
    """ONNX Runtime: the CPU execution provider always; on a GPU device the TensorRT
    (engine cache on) and CUDA providers first where this onnxruntime build has them
    (:func:`onnx_providers`; the GPU providers have not been executed here)."""

    kind = "onnxruntime"

    def __init__(self, path, device: str = "cpu", precision: str = "fp32", intra_threads: int = 1):
        try:
            import onnxruntime as ort
        except ImportError:  # an optional extra since a Jetson's onnxruntime-gpu must not be replaced
            raise BackendError(f"{ORT_MISSING}; cannot load {path}") from None
        self.path = Path(path)
        self.device = device
        gpu = cuda_index(device)
        so = ort.SessionOptions()
        so.intra_op_num_threads = max(1, int(intra_threads))  # the profile's (hardware_profile.Profile.threads)
        # threads that spin between tiles would take the core the STFT Tile and the source need
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.log_severity_level = 3
        providers = onnx_providers(ort.get_available_providers(), gpu, precision, self.path, ort.__version__)
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=so, providers=providers)
        except Exception as e:  # onnxruntime raises several unrelated types
            raise ModelError(f"cannot load ONNX model {self.path}: the file is corrupt or not ONNX "
                             f"({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
        self.providers = self.session.get_providers()
        if gpu is not None and self.providers == ["CPUExecutionProvider"]:
            self.device = "cpu"  # say what really runs it; the model manager logs it
        # FP16 in ONNX Runtime comes from the TensorRT provider; the network itself is FP32
        self.precision = "fp16" if precision == "fp16" and "TensorrtExecutionProvider" in self.providers else "fp32"
        inputs = self.session.get_inputs()
        self.input_names = [i.name for i in inputs]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.batch_dynamic = not isinstance(inputs[0].shape[0], int)

    def run(self, feed: dict, outputs: list) -> list:
        return self.session.run(outputs, feed)

    def memory(self) -> dict:
        return {}


class TorchBackend:
    """PyTorch for ``.pt``/``.pt2`` exports: a ``torch.export`` program archive (what
    ``rfdetect-train export`` writes; input/output names in its ``rfdetect.json``
    extra file) or, for older exports, a TorchScript module. CPU or CUDA; FP16 on
    CUDA runs under autocast (float16 convolutions, float32 outputs)."""

    kind = "pytorch"

    def __init__(self, path, device: str = "cpu", precision: str = "fp32", intra_threads: int = 1):
        try:
            import torch
        except ImportError:
            raise BackendError(f"model {path} needs PyTorch, which is not installed here "
                               f"(pip install torch, or use the .onnx beside it)") from None
        self.torch = torch
        self.path = Path(path)
        gpu = cuda_index(device)
        if gpu is not None and not torch.cuda.is_available():
            raise GpuUnavailable(f"device {device!r} asked for, but PyTorch sees no CUDA GPU here")
        self.device = "cpu" if gpu is None else f"cuda:{gpu}"
        # FP16 kernels on the CPU are slow or missing; half precision is a GPU feature
        self.precision = "fp16" if precision == "fp16" and gpu is not None else "fp32"
        if gpu is None:
            torch.set_num_threads(max(1, int(intra_threads)))
        meta = {TORCH_META: ""}
        try:
            with open(self.path, "rb") as f:  # a buffer: torch.export.load insists on .pt2 names otherwise
                program = torch.export.load(io.BytesIO(f.read()), extra_files=meta)
            if gpu is not None:
                # module().to() leaves the constants the export baked in (index grids) on the
                # CPU: "Expected all tensors to be on the same device" on the first run
                from torch.export.passes import move_to_device_pass
                program = move_to_device_pass(program, self.device)
            module = program.module()
            n_in = len(program.graph_signature.user_inputs)
            n_out = len(program.graph_signature.user_outputs)
        except Exception as e_export:
            try:
                with warnings.catch_warnings():  # deprecated, still the only way to read old exports
                    warnings.simplefilter("ignore", FutureWarning)
                    module = torch.jit.load(str(self.path), map_location="cpu", _extra_files=meta)
                n_in = n_out = None
            except Exception:
                raise ModelError(f"cannot load PyTorch model {self.path}: not a torch.export archive nor "
                                 f"TorchScript ({type(e_export).__name__}: {str(e_export)[:200]})") from None
        try:
            info = json.loads(meta[TORCH_META] or "{}")
        except (json.JSONDecodeError, UnicodeDecodeError):
            info = {}
        self.input_names = list(info.get("input_names") or [f"input_{i}" for i in range(n_in or 1)])
        self.output_names = list(info.get("output_names") or [f"output_{i}" for i in range(n_out or 1)])
        self.batch_dynamic = bool(info.get("batch_dynamic", False))
        self.module = module.to(self.device)
        # one stream per model: on the default stream the Detector's models, each run from
        # its own thread, would queue behind one another on the GPU
        self.stream = None if gpu is None else torch.cuda.Stream(device=self.device)

    def run(self, feed: dict, outputs: list) -> list:
        torch = self.torch
        scope = contextlib.nullcontext() if self.stream is None else torch.cuda.stream(self.stream)
        # FP16 through autocast, not .half(): the constants baked into an export stay float32,
        # and a convolution given float16 input with float32 constants would fail
        half = torch.autocast("cuda", dtype=torch.float16, enabled=self.precision == "fp16")
        with scope, half, torch.inference_mode():
            args = [torch.from_numpy(np.ascontiguousarray(feed[n])).to(self.device) for n in self.input_names]
            got = self.module(*args)
            got = [got] if isinstance(got, torch.Tensor) else list(got)
            by_name = dict(zip(self.output_names, got))
            # .cpu() waits for this stream's work only
            return [by_name[n].float().cpu().numpy() if by_name[n].is_floating_point() else by_name[n].cpu().numpy()
                    for n in outputs]

    def memory(self) -> dict:
        torch = self.torch
        if self.device == "cpu":
            return {}
        free, total = torch.cuda.mem_get_info(self.device)
        return {"gpu_bytes_in_use": int(torch.cuda.memory_allocated(self.device)),
                "gpu_bytes_peak": int(torch.cuda.max_memory_allocated(self.device)),
                "gpu_bytes_free": int(free), "gpu_bytes_total": int(total)}


def save_torch_program(module, example_inputs: tuple, path, input_names: list, output_names: list,
                       dynamic_batch: bool) -> None:
    """Write ``module`` as the archive :class:`TorchBackend` loads: a torch.export
    program plus its names in ``rfdetect.json`` (atomically)."""
    import os

    import torch
    dynamic = None
    if dynamic_batch:
        n = torch.export.Dim("n", min=1, max=65536)
        dynamic = tuple({0: n} for _ in example_inputs)
    program = torch.export.export(module, tuple(example_inputs), dynamic_shapes=dynamic)
    meta = json.dumps({"input_names": list(input_names), "output_names": list(output_names),
                       "batch_dynamic": bool(dynamic_batch), "torch": torch.__version__})
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        with open(tmp, "wb") as f:  # a file object: torch.export.save wants .pt2 names otherwise
            torch.export.save(program, f, extra_files={TORCH_META: meta})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
