"""TensorRT 10 engines: build from ONNX, validate against ONNX Runtime, run.

NOT EXECUTED: written against the TensorRT 10 Python API documentation (named
tensors: ``num_io_tensors`` / ``get_tensor_name`` / ``get_tensor_mode``,
``get_tensor_profile_shape``, ``set_input_shape``, ``set_tensor_address``,
``execute_async_v3``; ``build_serialized_network``) and never run: TensorRT cannot be
installed on the machines that wrote it and no GPU was lent to them. It is kept thin;
what is around it runs and is tested on the CPU: the optimisation profile's size
(:func:`card_max_batch`), splitting a call at the profile's maximum
(``backends.run_in_batches``), the engine manager that rebuilds, caches and deletes
engines that fail validation (``model_runtime.open_engine``). CUDA memory and streams
come from CuPy, the only CUDA layer in gr-rfdetect.

INT8: only explicit quantization -- an ONNX model that carries Q/DQ nodes (e.g. from
NVIDIA TensorRT Model Optimizer) is built as a strongly typed network, as TensorRT 10
asks. Calibration from tiles (``IInt8EntropyCalibrator2``, implicit quantization) was
removed: TensorRT 10.1 deprecated it, superseded by explicit quantization.

Engines are specific to a GPU model and a TensorRT version. :func:`engine_cache_path`
names a rebuilt engine after both, beside the ONNX it came from, so a Jetson and a
desktop sharing a model folder each keep their own.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Optional

import numpy as np

from ..gpu import BackendError, GpuUnavailable, cuda_index, require_cupy
from .backends import excess_error, run_in_batches

log = logging.getLogger("rfdetect.tensorrt")

WORKSPACE_BYTES = 1 << 30
# tolerance of an engine against ONNX Runtime on the same input (FP16 engines)
VALIDATE_ATOL = 2e-2
VALIDATE_RTOL = 2e-2
# optimum of a dynamic first dimension's profile (crops of a two-stage model are
# usually a few to a few tens per tile); the maximum comes from the card
OPT_BATCH = 16


class TensorRTUnavailable(GpuUnavailable):
    """TensorRT or CuPy is not installed, or there is no CUDA GPU."""


def _import():
    try:
        import tensorrt as trt
    except ImportError:
        raise TensorRTUnavailable("TensorRT is not installed here (python3 -c 'import tensorrt' fails)") from None
    cupy = require_cupy()
    if int(trt.__version__.split(".")[0]) < 10:
        raise TensorRTUnavailable(f"TensorRT {trt.__version__} found; gr-rfdetect needs TensorRT 10")
    return trt, cupy


class _Logger:
    _instance = None

    @classmethod
    def get(cls, trt):
        if cls._instance is None:
            cls._instance = trt.Logger(trt.Logger.WARNING)
        return cls._instance


def gpu_key(device: str = "cuda:0") -> str:
    """'<gpu-name>-sm<major><minor>-trt<version>': what an engine is valid for."""
    trt, cupy = _import()
    idx = cuda_index(device) or 0
    props = cupy.cuda.runtime.getDeviceProperties(idx)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    name = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()
    return f"{name}-sm{props['major']}{props['minor']}-trt{trt.__version__}"


def engine_cache_path(onnx_path, device: str = "cuda:0", fp16: bool = True) -> Path:
    onnx_path = Path(onnx_path)
    return onnx_path.with_name(f"{onnx_path.stem}.{gpu_key(device)}.{'fp16' if fp16 else 'fp32'}.engine")


def _to_np_dtype(trt, dt):
    return np.dtype(trt.nptype(dt))


def card_max_batch(card) -> int:
    """The largest first dimension the Detector gives this card's network in one call,
    the maximum of the engine's optimisation profile. Frequency chunks: row width /
    input width (rfdetect.inference.model_runtime.CardModel). A crop classifier takes one crop
    per proposal, and proposals per tile have no bound: as many crops as hold one tile
    of pixels (tile height x row width / crop_size^2; 256 for 1024 x 1024 tiles and 64 x
    64 crops), so activations stay about one tile's; more crops are run in several calls
    (TensorRTBackend.run)."""
    from . import postprocess
    width = card.spectrogram.width
    if card.output_format == "crop_classifier/1":
        crop = int(card.extra.get("crop_size", postprocess.CROP_SIZE))
        return max(1, card.input_shape[2] * width // (crop * crop))
    return max(1, width // card.input_shape[3])


def _parse(trt, builder, logger, onnx_path: Path, flags: int):
    network = builder.create_network(flags)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError(f"TensorRT cannot parse {onnx_path}: {errors}")
    return network, parser  # the parser must outlive the network's use


INT8_CALIBRATION_REMOVED = (
    "INT8 calibration from tiles is not supported: it used TensorRT's IInt8EntropyCalibrator2 (implicit "
    "quantization), deprecated in TensorRT 10.1 and superseded by explicit quantization. Quantize the ONNX "
    "model instead (Q/DQ nodes, e.g. with NVIDIA TensorRT Model Optimizer and these tiles as calibration "
    "data) and build from it: an ONNX model with Q/DQ nodes is built in INT8 without a calibrator")


def build_engine(onnx_path, fp16: bool = True, int8_calibration_dir: Optional[str] = None,
                 out_path=None, device: str = "cuda:0", max_batch: Optional[int] = None) -> Path:
    """ONNX -> serialised engine (written atomically). Dynamic first dimensions get
    an optimisation profile 1..``max_batch`` (default: :func:`card_max_batch` of the
    card beside the ONNX). An ONNX model with Q/DQ nodes (explicit quantization) is
    built as a strongly typed network, without precision flags (TensorRT 10's way to
    INT8). ``int8_calibration_dir`` is refused (:data:`INT8_CALIBRATION_REMOVED`)."""
    if int8_calibration_dir:
        raise BackendError(INT8_CALIBRATION_REMOVED)
    trt, cupy = _import()
    onnx_path = Path(onnx_path)
    if max_batch is None:
        from .model_card import ModelCard, card_for
        max_batch = card_max_batch(ModelCard.load(card_for(onnx_path)))
    out_path = Path(out_path) if out_path else engine_cache_path(onnx_path, device, fp16)
    cupy.cuda.Device(cuda_index(device) or 0).use()
    logger = _Logger.get(trt)
    builder = trt.Builder(logger)
    network, parser = _parse(trt, builder, logger, onnx_path, 0)
    quantized = any(network.get_layer(i).type in (trt.LayerType.QUANTIZE, trt.LayerType.DEQUANTIZE)
                    for i in range(network.num_layers))
    if quantized:  # "use explicit quantization with strong typing; no precision flags"
        network, parser = _parse(trt, builder, logger, onnx_path,
                                 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    if fp16 and not quantized:
        # a permission, not a demand: TensorRT keeps FP32 kernels where FP16 is not faster
        # (platform_has_fast_fp16 is deprecated since TensorRT 10.5, so it is not asked)
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    dynamic = False
    for i in range(network.num_inputs):
        t = network.get_input(i)
        shape = list(t.shape)
        if shape and shape[0] < 0:
            dynamic = True
            rest = [int(v) for v in shape[1:]]
            if any(v < 0 for v in rest):
                raise BackendError(f"{onnx_path}: input {t.name} has dynamic dimensions besides the first")
            profile.set_shape(t.name, [1] + rest, [min(OPT_BATCH, max_batch)] + rest, [max_batch] + rest)
    if dynamic:
        config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendError(f"TensorRT failed to build an engine from {onnx_path} (see the log above)")
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}")
    try:
        tmp.write_bytes(bytes(serialized))
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    log.warning("built TensorRT engine %s from %s (%s%s)", out_path, onnx_path,
                "INT8 from its Q/DQ nodes" if quantized else "FP16" if fp16 else "FP32",
                f", batch 1..{max_batch}" if dynamic else "")
    return out_path


class TensorRTBackend:
    """Runs a deserialised engine on its own CUDA stream (one per engine, so several
    models on one tile overlap on the GPU). Inputs are copied from page-locked host
    buffers asynchronously; ``run`` waits for its own stream only."""

    kind = "tensorrt"

    def __init__(self, path, device: str = "cuda:0", precision: str = "fp16", intra_threads: int = 1):
        trt, cupy = _import()
        self.trt, self.cupy = trt, cupy
        self.path = Path(path)
        idx = cuda_index(device)
        if idx is None:
            raise TensorRTUnavailable("TensorRT engines run on a GPU; device is 'cpu'")
        self.device = f"cuda:{idx}"
        self.precision = precision
        self._dev = cupy.cuda.Device(idx)
        with self._dev:
            runtime = trt.Runtime(_Logger.get(trt))
            self.engine = runtime.deserialize_cuda_engine(self.path.read_bytes())
            if self.engine is None:
                # wrong GPU, other TensorRT version, or a damaged file: the manager rebuilds
                raise BackendError(f"TensorRT {trt.__version__} cannot deserialise {self.path} on this GPU "
                                   f"(built for another GPU or TensorRT version, or damaged)")
            self.context = self.engine.create_execution_context()
            self.stream = cupy.cuda.Stream(non_blocking=True)
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_in = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.input_names = [n for n in names if is_in[n]]
        self.output_names = [n for n in names if not is_in[n]]
        self.batch_dynamic = self.engine.get_tensor_shape(self.input_names[0])[0] < 0
        # the most items one execution takes: the profile's maximum (get_tensor_profile_shape
        # gives min, opt, max of profile 0), whatever built the engine; run() splits bigger calls
        self.max_batch = min(int(self.engine.get_tensor_profile_shape(n, 0)[2][0]) if
                             self.engine.get_tensor_shape(n)[0] < 0 else int(self.engine.get_tensor_shape(n)[0])
                             for n in self.input_names)
        self._dtypes = {n: _to_np_dtype(trt, self.engine.get_tensor_dtype(n)) for n in names}
        self._device_bufs = {}
        self._host_bufs = {}
        self._peak = 0

    def _buffers(self, name, shape):
        """Device and pinned host buffers for a tensor, grown when a shape needs more."""
        cupy = self.cupy
        dt = self._dtypes[name]
        nbytes = int(np.prod(shape)) * dt.itemsize
        dev = self._device_bufs.get(name)
        if dev is None or dev.nbytes < nbytes:
            dev = cupy.empty(max(nbytes, 1), dtype=cupy.uint8)
            pinned = cupy.cuda.alloc_pinned_memory(max(nbytes, 1))
            self._device_bufs[name] = dev
            self._host_bufs[name] = pinned
        n = int(np.prod(shape))
        host = np.frombuffer(self._host_bufs[name], dtype=dt, count=n).reshape(shape)
        return dev[:n * dt.itemsize].view(dt).reshape(shape), host

    def run(self, feed: dict, outputs: list) -> list:
        """Outputs for ``feed``, in calls of at most ``max_batch`` items (crops of a
        two-stage model may outnumber the profile's maximum)."""
        return run_in_batches(self._run_once, feed, outputs, self.max_batch)

    def _run_once(self, feed: dict, outputs: list) -> list:
        with self._dev:
            for name in self.input_names:
                x = np.ascontiguousarray(feed[name], dtype=self._dtypes[name])
                if not self.context.set_input_shape(name, x.shape):
                    raise BackendError(f"engine {self.path}: input {name} cannot take shape {x.shape}")
                dev, host = self._buffers(name, x.shape)
                host[...] = x
                dev.set(host, stream=self.stream)  # pinned source: an asynchronous copy
                self.context.set_tensor_address(name, int(dev.data.ptr))
            shapes = {}
            for name in self.output_names:
                shape = tuple(self.context.get_tensor_shape(name))
                if any(v < 0 for v in shape):
                    raise BackendError(f"engine {self.path}: output {name} has data-dependent shape {shape}; "
                                       f"export a static-shape model (dense) for TensorRT")
                dev, _ = self._buffers(name, shape)
                shapes[name] = shape
                self.context.set_tensor_address(name, int(dev.data.ptr))
            if not self.context.execute_async_v3(self.stream.ptr):
                raise BackendError(f"engine {self.path}: execute_async_v3 failed")
            results = {}
            for name in outputs:
                dev, host = self._buffers(name, shapes[name])
                dev.get(stream=self.stream, out=host)
                results[name] = host
            self.stream.synchronize()
            return [results[n].astype(np.float32) if results[n].dtype == np.float16 else results[n].copy()
                    for n in outputs]

    def memory(self) -> dict:
        free, total = self.cupy.cuda.runtime.memGetInfo()
        in_use = int(self.cupy.get_default_memory_pool().used_bytes())
        self._peak = max(self._peak, in_use)  # buffers only grow, so the peak is seen here
        return {"gpu_bytes_in_use": in_use, "gpu_bytes_peak": self._peak,
                "gpu_bytes_free": int(free), "gpu_bytes_total": int(total)}


def validate_engine(engine_path, onnx_path, tiles: int = 3, device: str = "cuda:0",
                    remove_on_failure: bool = True) -> float:
    """Run the engine and ONNX Runtime on the same random inputs; raise BackendError
    when any output differs by more than VALIDATE_ATOL + VALIDATE_RTOL*|x|. Returns
    the worst excess (<= 0 when within tolerance). A dynamic first dimension gets one
    item more than the engine's profile maximum where that is small (so the split in
    ``run`` is checked too), else 4. ``remove_on_failure``: delete the engine when it
    fails (or cannot run), so that nothing loads it later unchecked."""
    from .backends import OnnxBackend
    try:
        trt_b = TensorRTBackend(engine_path, device)
        ref = OnnxBackend(onnx_path)
        batch = trt_b.max_batch + 1 if trt_b.max_batch < OPT_BATCH else 4
        rng = np.random.default_rng(0)
        worst = -np.inf
        for _ in range(tiles):
            feed = {}
            for inp in ref.session.get_inputs():
                shape = [v if isinstance(v, int) else batch for v in inp.shape]
                feed[inp.name] = rng.random(shape, dtype=np.float32)
            a = ref.run(feed, ref.output_names)
            b = trt_b.run(feed, ref.output_names)
            for name, x, y in zip(ref.output_names, a, b):
                if x.shape != y.shape:
                    raise BackendError(f"engine {engine_path}: output {name} shape {y.shape} != ONNX {x.shape}")
                excess = excess_error(x, y, VALIDATE_RTOL)
                worst = max(worst, excess)
                if excess > VALIDATE_ATOL:
                    raise BackendError(f"engine {engine_path}: output {name} differs from ONNX Runtime by "
                                       f"{excess:.3g} (> {VALIDATE_ATOL} + {VALIDATE_RTOL}*|x|)")
    except GpuUnavailable:  # no TensorRT or GPU: nothing was checked, nothing is judged
        raise
    except BaseException:
        if remove_on_failure:
            Path(engine_path).unlink(missing_ok=True)
            log.warning("deleted TensorRT engine %s: it failed validation", engine_path)
        raise
    log.warning("engine %s matches ONNX Runtime on %d inputs (worst excess %.3g)", engine_path, tiles, worst)
    return worst
