"""TensorRT 10 engines: build from ONNX, validate against ONNX Runtime, run.

Kept small on purpose: it is written against the TensorRT 10 Python API (named
tensors: ``num_io_tensors`` / ``get_tensor_name`` / ``get_tensor_mode``,
``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``;
``build_serialized_network``) and could not be executed where it was written (no
TensorRT wheel reaches that machine; docs/performance.md says what ran). CUDA memory
and streams come from CuPy, the only CUDA layer in gr-rfdetect.

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

from .backends import BackendError, GpuUnavailable, cuda_index, excess_error, require_cupy

log = logging.getLogger("rfdetect.tensorrt")

WORKSPACE_BYTES = 1 << 30
# tolerance of an engine against ONNX Runtime on the same input (FP16 engines)
VALIDATE_ATOL = 2e-2
VALIDATE_RTOL = 2e-2
# dynamic first dimension (crops of a two-stage model, frequency-split tiles)
MAX_DYNAMIC_BATCH = 256


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


class _Calibrator:
    """INT8 entropy calibration from a folder of tiles written by the Detector
    (``tile_dir``) or ``rfdetect-train prepare`` (16-bit PNGs)."""

    def __new__(cls, trt, cupy, folder, input_name, shape, cache_path):
        from .tile_io import read_tile_png

        class Calibrator(trt.IInt8EntropyCalibrator2):
            def __init__(self):
                trt.IInt8EntropyCalibrator2.__init__(self)
                self.files = sorted(Path(folder).glob("*.png"))[:512]
                if not self.files:
                    raise BackendError(f"INT8 calibration folder {folder} holds no tile PNGs")
                self.i = 0
                self.buf = cupy.empty(shape, dtype=cupy.float32)

            def get_batch_size(self):
                return 1

            def get_batch(self, names):
                if self.i >= len(self.files):
                    return None
                tile = read_tile_png(self.files[self.i])
                self.i += 1
                if tile.shape != tuple(shape[2:]):
                    raise BackendError(f"calibration tile {self.files[self.i - 1]} is {tile.shape}, the "
                                       f"network takes {tuple(shape[2:])}")
                self.buf.set(tile.reshape(shape).astype(np.float32))
                return [int(self.buf.data.ptr)]

            def read_calibration_cache(self):
                return cache_path.read_bytes() if cache_path.is_file() else None

            def write_calibration_cache(self, cache):
                cache_path.write_bytes(bytes(cache))

        return Calibrator()


def build_engine(onnx_path, fp16: bool = True, int8_calibration_dir: Optional[str] = None,
                 out_path=None, device: str = "cuda:0") -> Path:
    """ONNX -> serialised engine (written atomically). Dynamic first dimensions get
    an optimisation profile 1..MAX_DYNAMIC_BATCH."""
    trt, cupy = _import()
    onnx_path = Path(onnx_path)
    out_path = Path(out_path) if out_path else engine_cache_path(onnx_path, device, fp16)
    cupy.cuda.Device(cuda_index(device) or 0).use()
    logger = _Logger.get(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    # platform_has_fast_* are deprecated in TensorRT 10 (and may go): assume yes when absent
    if fp16 and getattr(builder, "platform_has_fast_fp16", True):
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
            opt = min(16, MAX_DYNAMIC_BATCH)
            profile.set_shape(t.name, [1] + rest, [opt] + rest, [MAX_DYNAMIC_BATCH] + rest)
    if dynamic:
        config.add_optimization_profile(profile)
    if int8_calibration_dir:
        if not getattr(builder, "platform_has_fast_int8", True):
            raise BackendError("this GPU has no fast INT8: build without --int8-calibration")
        first = network.get_input(0)
        shape = [1 if v < 0 else int(v) for v in first.shape]
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = _Calibrator(trt, cupy, int8_calibration_dir, first.name, shape,
                                             out_path.with_suffix(".calib"))
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendError(f"TensorRT failed to build an engine from {onnx_path} (see the log above)")
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}")
    try:
        tmp.write_bytes(bytes(serialized))
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    log.warning("built TensorRT engine %s from %s", out_path, onnx_path)
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


def validate_engine(engine_path, onnx_path, tiles: int = 3, device: str = "cuda:0") -> float:
    """Run the engine and ONNX Runtime on the same random inputs; raise BackendError
    when any output differs by more than VALIDATE_ATOL + VALIDATE_RTOL*|x|. Returns
    the worst excess (<= 0 when within tolerance)."""
    from .backends import OnnxBackend
    trt_b = TensorRTBackend(engine_path, device)
    ref = OnnxBackend(onnx_path)
    rng = np.random.default_rng(0)
    worst = -np.inf
    for _ in range(tiles):
        feed = {}
        for inp in ref.session.get_inputs():
            shape = [v if isinstance(v, int) else 4 for v in inp.shape]
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
    log.warning("engine %s matches ONNX Runtime on %d inputs (worst excess %.3g)", engine_path, tiles, worst)
    return worst
