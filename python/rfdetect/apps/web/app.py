"""The FastAPI application of ``rfdetect serve`` (docs/web.md).

Everything goes through the existing code: tiles through ``load_model`` (the
Detector's models), recordings through ``run_detect`` (``rfdetect detect``'s
flowgraph), training through ``rfdetect-train run`` worker processes.
"""
from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import os
import re
import shutil
import threading
import time
import uuid
import zipfile
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from fastapi import Body, FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles

from ... import __version__
from ...inference.model_runtime import AUTO_MODEL
from .detection import (COMBINE, NAME_RE, BadInput, ModelRegistry, RecordingDetector, TileDetectors, UnknownModel,
                        builtin_models, decode_image, record_to_detection, scratch_dir, unpack_upload,
                        write_raw_recording)
from .jobs import (ARCHS, SPECTROGRAM_KEYS, TUNED, WEB_DIR, JobError, JobRunner, JobStore, NoSuchJob, estimate,
                   spectrogram_defaults)
from .live import LiveFeed
from .schemas import (DetectResponse, Deleted, ErrorResponse, Estimate, ExportResult, Installed, InstallRequest, Job,
                      JobComparison, JobDetail, JobRequest, LiveSummary, ModelInfo, PluginJobStatus, PluginParam,
                      PluginResult, RecordingDetectRequest, RecordingDetectResponse, RecordingInfo, ServiceStatus)

STATIC = Path(__file__).resolve().parent / "static"
DEFAULT_MAX_UPLOAD_MB = 512
PLUGIN_JOBS_KEPT = 200
SSE_MAX_S = 1800  # an event stream ends after this; EventSource reconnects by itself
PAGES = {"/training": "training.html", "/live": "live.html", "/recordings": "recordings.html",
         "/docs": "api.html"}  # /docs: our own page (FastAPI's fetches Swagger UI from a CDN)


def _errors(*codes: int) -> dict:
    """OpenAPI ``responses`` for the error statuses an endpoint gives (body: ErrorResponse)."""
    what = {400: "bad input: the message names the parameter or part", 404: "no such model, job or recording",
            409: "the job is not in a state that allows this", 413: "the upload is over the size limit "
            "(--max-upload-mb; GET /api/status gives it in bytes)"}
    return {c: {"model": ErrorResponse, "description": what[c]} for c in codes}


def _validation_message(exc: RequestValidationError) -> str:
    """FastAPI's list of validation errors -> one sentence naming each parameter."""
    parts = []
    for e in exc.errors():
        where = ".".join(str(x) for x in e.get("loc", ()) if x not in ("query", "body", "path", "form"))
        parts.append(f"{where or 'request'}: {e.get('msg', 'invalid')}")
    return "; ".join(parts)


@dataclass
class ServeConfig:
    data: Path
    models: Optional[Path] = None
    zmq: Optional[str] = None
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB


class UploadLimit:
    """ASGI middleware: a request body over the limit gets 413 (by its Content-Length,
    or counted as it arrives when it has none)."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = int(max_bytes)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        limit = self.max_bytes
        msg = f"the upload is larger than this service's limit of {limit} bytes ({limit / 2**20:g} MiB; --max-upload-mb)"
        if length is not None and length.isdigit() and int(length) > limit:
            return await JSONResponse({"detail": msg}, status_code=413)(scope, receive, send)
        seen = 0
        started = False

        async def counted():
            nonlocal seen
            m = await receive()
            if m["type"] == "http.request":
                seen += len(m.get("body", b""))
                if seen > limit:
                    raise _TooLarge()
            return m

        async def tracked_send(m):
            nonlocal started
            if m["type"] == "http.response.start":
                started = True
            await send(m)

        try:
            await self.app(scope, counted, tracked_send)
        except _TooLarge:
            if not started:
                await JSONResponse({"detail": msg}, status_code=413)(scope, receive, send)


class _TooLarge(Exception):
    pass


def _http(e: Exception):
    if isinstance(e, (UnknownModel, NoSuchJob)):
        return HTTPException(404, str(e).strip("'\""))
    if isinstance(e, JobError):
        return HTTPException(409, str(e))
    return HTTPException(400, str(e))


def _sse(obj, event: Optional[str] = None) -> str:
    return (f"event: {event}\n" if event else "") + f"data: {json.dumps(obj)}\n\n"


def create_app(cfg: ServeConfig) -> FastAPI:
    data = Path(cfg.data).resolve()
    data.mkdir(parents=True, exist_ok=True)
    web = data / WEB_DIR
    web.mkdir(parents=True, exist_ok=True)
    lock = open(web / "serve.lock", "a")
    try:  # two services on one data folder would both start its queued jobs
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        raise RuntimeError(f"another rfdetect serve uses {data} (its {web / 'serve.lock'} is locked); "
                           f"give each service its own --data") from None
    scratch = web / "scratch"
    shutil.rmtree(scratch, ignore_errors=True)  # requests of an earlier run that died midway
    registry = ModelRegistry(cfg.models)
    tiles = TileDetectors(registry)
    recdet = RecordingDetector(registry)
    store = JobStore(web / "jobs.sqlite")
    runner = JobRunner(store, data, cfg.models)
    live = LiveFeed(cfg.zmq)
    plugin_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rfdetect-plugin")
    plugin_jobs: "OrderedDict[str, dict]" = OrderedDict()
    plugin_lock = threading.Lock()

    max_bytes = int(cfg.max_upload_mb * 2**20)
    app = FastAPI(title="gr-rfdetect", version=__version__, docs_url=None, redoc_url=None,
                  description="Real-time RF signal detection: /detect, an IQEngine detector plugin server, "
                              f"training jobs and a live view (docs/web.md). Uploads are limited to {max_bytes} "
                              "bytes (--max-upload-mb): larger ones get 413. Bad input gets 400 with "
                              "{\"detail\": \"...\"} naming the problem.")

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError):
        # one clear 400 (FastAPI's default is a 422 with a list of error objects)
        return JSONResponse({"detail": _validation_message(exc)}, status_code=400)

    def openapi():
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            for ops in schema["paths"].values():  # validation errors are answered 400 (above), not 422
                for op in ops.values():
                    responses = op.get("responses", {})
                    if responses.pop("422", None) is not None and "400" not in responses:
                        responses["400"] = {"description": "bad input: the message names the parameter",
                                            "content": {"application/json": {"schema": {
                                                "$ref": "#/components/schemas/ErrorResponse"}}}}
            schema["components"]["schemas"].pop("HTTPValidationError", None)
            schema["components"]["schemas"].pop("ValidationError", None)
            app.openapi_schema = schema
        return app.openapi_schema
    app.openapi = openapi
    app.add_middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["*"], allow_headers=["*"])
    app.add_middleware(UploadLimit, max_bytes=max_bytes)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.state.runner, app.state.live, app.state.store, app.state.lock = runner, live, store, lock

    @app.on_event("startup")
    def _start():
        runner.start()
        live.start()

    @app.on_event("shutdown")
    def _stop():
        runner.stop()
        live.stop()
        plugin_pool.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------ pages
    @app.get("/", include_in_schema=False)
    def index():
        return RedirectResponse("/training")

    for route, page in PAGES.items():
        app.add_api_route(route, lambda page=page: FileResponse(STATIC / page), include_in_schema=False)
    app.add_api_route("/training/jobs/{job_id}", lambda job_id: FileResponse(STATIC / "job.html"),
                      include_in_schema=False)

    @app.get("/api/status", tags=["service"], response_model=ServiceStatus, summary="Service status")
    def status():
        """Version, folders, the upload limit, the devices training can use, utilisation and the
        live subscription."""
        return {"version": __version__, "data": str(data), "models": str(cfg.models) if cfg.models else None,
                "zmq": cfg.zmq, "max_upload_bytes": max_bytes, "devices": runner.devices(),
                "utilisation": runner.last_utilisation, "running": sorted(runner.procs)}

    # ------------------------------------------------------------ /detect
    @app.post("/detect", tags=["detect"], response_model=DetectResponse, response_model_exclude_none=True,
              summary="Detect signals in a spectrogram tile or a SigMF recording", responses=_errors(400, 404, 413))
    def detect(image: Optional[UploadFile] = File(None, description="grayscale spectrogram tile, PNG or JPEG"),
               meta: Optional[UploadFile] = File(None, description="SigMF .sigmf-meta"),
               data_part: Optional[UploadFile] = File(None, alias="data", description="SigMF .sigmf-data"),
               archive: Optional[UploadFile] = File(None, description="SigMF .sigmf archive"),
               threshold: Optional[float] = Query(None, ge=0.0, le=1.0,
                                                  description="score threshold (default: the model card's)"),
               model: str = Query("auto", description="auto (a recording: the embedded model made for its rate and "
                                                      "centre frequency, as `rfdetect detect` picks it; a tile: "
                                                      "default), default, narrowband, wideband, narrowband-zoom, narrowband-x2, "
                                                      "wideband-short, energy, "
                                                      "pulse, carrier or a "
                                                      "model under --models; "
                                                      "for a recording, several joined by '+' run together, as "
                                                      "`rfdetect detect --model A --model B` (auto+pulse)"),
               fft_size: Optional[int] = Query(None), hop: Optional[int] = Query(None),
               width: Optional[int] = Query(None), tile_height: Optional[int] = Query(None),
               overlap: Optional[int] = Query(None)):
        """Detect signals in a spectrogram tile (``image``) or a SigMF recording (``meta`` +
        ``data``, or ``archive``). Tiles: boxes in pixels. Recordings: also ``t_start``/``t_stop``
        (seconds from the first sample) and ``f_low``/``f_high`` (absolute Hz), through the
        ``rfdetect detect`` flowgraph. Spectrogram settings default to the model card's (energy:
        4096/2048/1024, 1024-row tiles). 400: an upload that cannot be decoded; 404: an unknown
        model; 413: an upload over the limit (GET /api/status, ``max_upload_bytes``)."""
        try:
            registry.spec(model)
            if image is not None:
                tile = decode_image(image.file.read())
                dets, ms = tiles.detect(model, tile, threshold, fft_size, hop)
                return {"detections": dets, "timing_ms": round(ms, 3)}
            if meta is None and data_part is None and archive is None:
                raise BadInput("no upload: send 'image' (a PNG/JPEG tile), or 'meta' + 'data' (SigMF), "
                               "or 'archive' (.sigmf)")
            work = scratch_dir(scratch)
            try:
                dpath = apath = None
                if data_part is not None:
                    dpath = work / "data.part"
                    with open(dpath, "wb") as f:
                        shutil.copyfileobj(data_part.file, f, 1 << 20)
                if archive is not None:
                    apath = work / "archive.part"
                    with open(apath, "wb") as f:
                        shutil.copyfileobj(archive.file, f, 1 << 20)
                meta_path = unpack_upload(work, meta.file.read() if meta is not None else None, dpath, apath)
                r = recdet.run(meta_path, model, work, threshold=threshold, fft_size=fft_size, hop=hop, width=width,
                               tile_height=tile_height, overlap=overlap)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            dets = [record_to_detection(x, r["params"], r["sample_rate"], r["center_freq"]) for x in r["records"]]
            return {"detections": dets, "timing_ms": round(r["timing_ms"], 3)}
        except (BadInput, UnknownModel) as e:
            raise _http(e)

    # ------------------------------------------------------------ IQEngine plugins
    def plugin_definition(name: str) -> dict:
        if AUTO_MODEL in registry.spec(name).split(COMBINE):  # the settings of the card it picks per recording
            return {}
        params, height = registry.settings(name)
        card = registry.card(name)
        score = card.score_threshold if card is not None else 0.0

        def p(title, typ, default):
            return {"title": title, "type": typ, "default": default, "value": default}
        return {"threshold": p("score threshold (0-1)", "number", score),
                "fft_size": p("FFT size", "integer", params.fft_size),
                "hop": p("hop (samples)", "integer", params.hop),
                "width": p("tile width (bins)", "integer", params.width),
                "tile_height": p("tile height (rows)", "integer", height),
                "overlap": p("tile overlap (rows)", "integer", min(128, height // 8))}

    @app.get("/plugins", tags=["IQEngine plugins"], response_model=list[str], summary="IQEngine: list the plugins")
    @app.get("/plugins/", include_in_schema=False)
    def plugins_list():
        """IQEngine: the plugin names, one per model."""
        return registry.names()

    @app.get("/plugins/{name}", tags=["IQEngine plugins"], response_model=dict[str, PluginParam],
             summary="IQEngine: a plugin's custom parameters", responses=_errors(400, 404))
    def plugin_params(name: str):
        """IQEngine: the plugin's custom parameters ``{param: {title, type, default}}``."""
        try:
            return plugin_definition(name)
        except (BadInput, UnknownModel) as e:
            raise _http(e)

    @app.post("/plugins/{name}", tags=["IQEngine plugins"], response_model=PluginJobStatus,
              response_model_exclude_none=True, summary="IQEngine: run a plugin on IQ samples",
              responses=_errors(400, 404, 413))
    def plugin_run(name: str, metadata_file: str = Form(..., description="JSON: file_name, data_type, sample_rate, "
                                                                           "center_freq"),
                   iq_file: UploadFile = File(..., description="raw IQ samples (iq/cf32_le, iq/ci16_le, iq/ci8)"),
                   custom_params: Optional[str] = Form(None, description="JSON object of custom parameters")):
        """IQEngine: start detection on the samples -> ``{job_id, ...}``; poll
        ``/plugins/{job_id}/status``, then read ``/plugins/{job_id}/result``."""
        try:
            defs = plugin_definition(name)
            try:
                md = json.loads(metadata_file)
                assert isinstance(md, dict)
            except (ValueError, AssertionError):
                raise BadInput("metadata_file: not a JSON object") from None
            missing = [k for k in ("sample_rate", "center_freq", "data_type") if k not in md]
            if missing:
                raise BadInput(f"metadata_file: missing {', '.join(missing)}")
            try:
                cp = json.loads(custom_params) if custom_params else {}
                assert isinstance(cp, dict)
            except (ValueError, AssertionError):
                raise BadInput("custom_params: not a JSON object") from None
            settings = {}
            for k, v in cp.items():
                if k not in defs or v in (None, ""):
                    continue
                try:
                    settings[k] = float(v) if defs[k]["type"] == "number" else int(float(v))
                except (TypeError, ValueError):
                    raise BadInput(f"custom_params: {k}={v!r} is not a {defs[k]['type']}") from None
            work = scratch_dir(scratch)
            try:
                raw = work / "iq.part"
                with open(raw, "wb") as f:
                    shutil.copyfileobj(iq_file.file, f, 1 << 20)
                meta_path = write_raw_recording(work, "iq", raw, md["data_type"], float(md["sample_rate"]),
                                                float(md["center_freq"]))
                recdet.options(recdet.resolve(meta_path, name, **settings), **settings)  # bad settings fail now, not later
            except BaseException:
                shutil.rmtree(work, ignore_errors=True)
                raise
        except (BadInput, UnknownModel) as e:
            raise _http(e)
        except (TypeError, ValueError) as e:
            raise HTTPException(400, f"metadata_file: {e}")
        job_id = str(uuid.uuid4())
        status = {"job_id": job_id, "function_name": name, "file_name": str(md.get("file_name", "")),
                  "progress": 0}
        entry = {"status": status, "result": None}
        with plugin_lock:
            plugin_jobs[job_id] = entry
            while len(plugin_jobs) > PLUGIN_JOBS_KEPT:  # the oldest results go (IQEngine reads one at once)
                plugin_jobs.popitem(last=False)

        def work_fn():
            try:
                status["progress"] = 10
                r = recdet.run(meta_path, name, work, **settings)
                entry["result"] = {"annotations": r["annotations"], "metadata_file": md,
                                   "additionalProperties": {"model": r["model"], "timing_ms": round(r["timing_ms"], 1)}}
            except Exception as e:  # the job's error, for IQEngine's status poll
                status["error"] = f"{type(e).__name__}: {e}" if not isinstance(e, BadInput) else str(e)
            finally:
                shutil.rmtree(work, ignore_errors=True)
                status["progress"] = 100
        plugin_pool.submit(work_fn)
        return status

    def plugin_job(job_id):
        with plugin_lock:
            j = plugin_jobs.get(job_id)
        if j is None:
            raise HTTPException(404, "Job not found")
        return j

    @app.get("/plugins/{job_id}/status", tags=["IQEngine plugins"], response_model=PluginJobStatus,
             response_model_exclude_none=True, summary="IQEngine: a plugin job's progress", responses=_errors(404))
    def plugin_status(job_id: str):
        """IQEngine: ``{job_id, function_name, file_name, progress (0-100), error?}``."""
        return dict(plugin_job(job_id)["status"])

    @app.get("/plugins/{job_id}/result", tags=["IQEngine plugins"], response_model=PluginResult,
             response_model_exclude_none=True, summary="IQEngine: a plugin job's annotations",
             responses=_errors(400, 404))
    def plugin_result(job_id: str):
        """IQEngine: ``{job_status, annotations}`` (SigMF annotations, absolute Hz) once progress is 100;
        400 before (``Job not complete``) or when the job failed (its error)."""
        j = plugin_job(job_id)
        st = dict(j["status"])
        if st["progress"] != 100:
            raise HTTPException(400, "Job not complete")
        if st.get("error"):
            raise HTTPException(400, st["error"])
        return {"job_status": st, **j["result"]}

    # ------------------------------------------------------------ models and recordings
    @app.get("/api/models", tags=["models"], response_model=list[ModelInfo], summary="The models and their cards")
    def models():
        """The models with their cards (``energy`` has none)."""
        out = []
        for n in registry.names():
            try:
                card = registry.card_dict(n)
                out.append({"name": n, "card": card, "builtin": n in builtin_models()})
            except Exception as e:  # a broken model folder is listed with its problem
                out.append({"name": n, "card": None, "error": str(e)})
        return out

    def recordings_list():
        out = []
        for p in sorted(set(data.rglob("*.sigmf-meta")) | set(data.rglob("*.sigmf"))):
            rel = p.relative_to(data)
            if rel.parts[0] == WEB_DIR or any(part.startswith(".") for part in rel.parts):
                continue
            out.append(p)
        return out

    def recording_path(rel: str) -> Path:
        """A recording under --data that opens (a broken one: 400 naming it, before any work)."""
        from ...formats.sigmf_io import RecordingError, SigMFRecording
        p = (data / rel).resolve()
        if data not in p.parents or not p.is_file() or p not in recordings_list():
            raise HTTPException(404, f"no recording {rel!r} under the data folder")
        try:
            SigMFRecording.open(p)
        except (RecordingError, ValueError, OSError) as e:
            raise HTTPException(400, f"recording {rel!r}: {e}") from None
        return p

    @app.get("/api/recordings", tags=["recordings"], response_model=list[RecordingInfo],
             summary="The recordings under --data")
    def recordings():
        """The SigMF recordings under ``--data`` with their metadata and annotations."""
        from ...formats.sigmf_io import SigMFRecording
        out = []
        for p in recordings_list():
            item = {"path": str(p.relative_to(data))}
            try:
                r = SigMFRecording.open(p)
                item.update(sample_rate=r.sample_rate, center_freq=r.center_frequency, samples=r.n_samples,
                            seconds=r.n_samples / r.sample_rate, datatype=r.datatype,
                            annotations=len(r.annotations),
                            labels=sorted({a.get("core:label", a.get("core:description", "")) for a in r.annotations}))
            except Exception as e:
                item["error"] = str(e)
            out.append(item)
        return out

    def _plot(rel: str, records: list, tag: str) -> Path:
        from ..plot import plot_detections
        src = recording_path(rel)
        key = hashlib.sha1(f"{rel}|{src.stat().st_mtime_ns}|{tag}".encode()).hexdigest()[:16]
        out = web / "previews" / f"{key}.png"
        if not out.is_file():
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name(f".{key}.{os.getpid()}.{threading.get_ident()}.png")
            try:
                plot_detections(src, records, tmp)
                os.replace(tmp, out)
            finally:
                tmp.unlink(missing_ok=True)
        return out

    @app.get("/api/recordings/preview", tags=["recordings"], response_class=FileResponse,
             summary="A recording's spectrogram with its ground truth",
             responses={200: {"content": {"image/png": {}}, "description": "PNG"}, **_errors(404)})
    def recording_preview(path: str):
        """A spectrogram PNG of the recording with its ground-truth annotations (dashed)."""
        return FileResponse(_plot(path, [], "truth"), media_type="image/png")

    @app.post("/api/recordings/detect", tags=["recordings"], response_model=RecordingDetectResponse,
              summary="Run a model on a recording under --data", responses=_errors(400, 404))
    def recording_detect(body: RecordingDetectRequest = Body(..., examples=[{"path": "rec.sigmf-meta",
                                                                             "model": "energy"}])):
        """Run a model on a recording under ``--data`` (``rfdetect detect``'s flowgraph): its
        detections, the ground truth, and a PNG with both."""
        from ...formats.records import from_annotation
        from ...formats.sigmf_io import SigMFRecording
        rel, name = body.path, body.model
        src = recording_path(rel)
        settings = {k: getattr(body, k) for k in ("threshold", *SPECTROGRAM_KEYS) if getattr(body, k) is not None}
        work = scratch_dir(scratch)
        try:
            r = recdet.run(src, name, work, **settings)
        except (BadInput, UnknownModel) as e:
            raise _http(e)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        png = _plot(rel, r["records"], hashlib.sha1(json.dumps([name, settings, r["records"]],
                                                              sort_keys=True).encode()).hexdigest())
        rec = SigMFRecording.open(src)
        truth = [from_annotation(a, rec.sample_rate) for a in rec.annotations
                 if a.get("core:generator") != "gr-rfdetect"]
        dets = [record_to_detection(x, r["params"], r["sample_rate"], r["center_freq"]) for x in r["records"]]
        return {"model": r["model"], "detections": dets, "truth": truth, "timing_ms": round(r["timing_ms"], 1),
                "image": f"/api/previews/{png.name}"}

    @app.get("/api/previews/{name}", tags=["recordings"], response_class=FileResponse,
             summary="A PNG made by /api/recordings/detect",
             responses={200: {"content": {"image/png": {}}, "description": "PNG"}, **_errors(404)})
    def preview_file(name: str):
        """The image URL that /api/recordings/detect returns (detections and ground truth drawn)."""
        if not re.fullmatch(r"[0-9a-f]{16}\.png", name) or not (web / "previews" / name).is_file():
            raise HTTPException(404, "no such preview")
        return FileResponse(web / "previews" / name, media_type="image/png")

    # ------------------------------------------------------------ training jobs
    def job_params(body: JobRequest) -> tuple:
        if not body.recordings:
            raise HTTPException(400, "recordings: choose at least one recording under the data folder")
        paths = [recording_path(r) for r in body.recordings]
        if body.arch not in ARCHS:
            raise HTTPException(400, f"arch {body.arch!r} is not one of {', '.join(ARCHS)}")
        if not re.fullmatch(r"cpu|cuda(:\d+)?", body.device):
            raise HTTPException(400, f"device {body.device!r}: cpu, cuda or cuda:N")
        p = body.model_dump(include={"arch", "device", *SPECTROGRAM_KEYS, *TUNED, "max_minutes", "threads", "seed"})
        for k, v in spectrogram_defaults().items():
            p[k] = v if p[k] is None else p[k]
        from ...dsp.spectrogram import SpectrogramConfigError, SpectrogramParams
        try:
            SpectrogramParams(fft_size=p["fft_size"], hop=p["hop"], width=p["width"])
        except SpectrogramConfigError as e:
            raise HTTPException(400, str(e))
        if not 0 <= p["overlap"] < p["tile_height"]:
            raise HTTPException(400, "overlap must be >= 0 and below tile_height")
        return paths, p

    @app.post("/api/train/estimate", tags=["training"], response_model=Estimate,
              summary="Auto-tuned values and estimated time of a job", responses=_errors(400, 404))
    def train_estimate(body: JobRequest):
        """The auto-tuned values for a selection (rows of training/autotune.py's table), the
        overrides applied, and the estimated time."""
        paths, p = job_params(body)
        return estimate(paths, p)

    @app.post("/api/jobs", tags=["training"], status_code=201, response_model=Job, summary="Create a training job",
              responses=_errors(400, 404))
    def job_create(body: JobRequest = Body(..., examples=[{"recordings": ["a.sigmf-meta"], "arch": "two_stage",
                                                           "epochs": 3}])):
        """Queue a training job: ``recordings`` (paths under --data), ``arch``, spectrogram and
        tile settings, and any of the auto-tuned values to override."""
        paths, p = job_params(body)
        name = (body.name or f"{p['arch']} on {len(paths)} recordings")[:100]
        job_id = runner.create(name, paths, p)
        return store.get(job_id)

    @app.get("/api/jobs", tags=["training"], response_model=list[Job], summary="The job history")
    def jobs_list():
        """Every job, newest first (the history)."""
        return store.list()

    @app.get("/api/jobs/compare", tags=["training"], response_model=list[JobComparison],
             summary="Jobs' metrics side by side", responses=_errors(404))
    def jobs_compare(ids: str = Query(..., description="comma-separated job ids")):
        """Finished jobs' metrics side by side."""
        out = []
        for s in ids.split(","):
            if not s.strip():
                continue
            try:
                j = store.get(int(s))
            except (ValueError, NoSuchJob) as e:
                raise HTTPException(404, str(e))
            rep = j.get("report") or {}
            pix, phys = rep.get("pixel") or {}, rep.get("physical") or {}
            last = (store.metrics(j["id"]) or [{}])[-1]
            out.append({"id": j["id"], "name": j["name"], "state": j["state"], "arch": j["params"]["arch"],
                        "epochs_run": last.get("epoch"), "val_loss": last.get("val_loss"),
                        "val_ap50": last.get("val_ap50"), "val_precision": last.get("val_precision"),
                        "val_recall": last.get("val_recall"), "val_f1": last.get("val_f1"), "pixel_mAP": pix.get("mAP"), "pixel_AP50": pix.get("AP50"),
                        "macro_f1": pix.get("macro_f1"),
                        "physical_AP50": ((phys.get("ap50") or {}).get("class_agnostic_AP")),
                        "physical_recall": ((phys.get("class_agnostic") or {}).get("recall")),
                        "seconds": round((j["finished"] or time.time()) - j["started"], 1) if j["started"] else None})
        return out

    @app.get("/api/jobs/{job_id}", tags=["training"], response_model=JobDetail, summary="One job",
             responses=_errors(404))
    def job_show(job_id: int):
        """One job: parameters, state, progress, per-epoch metrics, history, report, export."""
        try:
            j = store.get(job_id)
        except NoSuchJob as e:
            raise _http(e)
        return {**j, "metrics": store.metrics(job_id), "history": store.history(job_id)}

    def _action(job_id: int, fn):
        try:
            fn(job_id)
        except (NoSuchJob, JobError) as e:
            raise _http(e)
        return store.get(job_id)

    @app.post("/api/jobs/{job_id}/pause", tags=["training"], response_model=Job, summary="Pause a job",
              responses=_errors(404, 409))
    def job_pause(job_id: int):
        """Stop a running or queued job, keeping its checkpoint (resume continues from it)."""
        return _action(job_id, runner.pause)

    @app.post("/api/jobs/{job_id}/resume", tags=["training"], response_model=Job, summary="Resume a job",
              responses=_errors(404, 409))
    def job_resume(job_id: int):
        """Queue a paused, interrupted or failed job again; it continues from its last checkpoint."""
        return _action(job_id, runner.resume)

    @app.post("/api/jobs/{job_id}/cancel", tags=["training"], response_model=Job, summary="Cancel a job",
              responses=_errors(404, 409))
    def job_cancel(job_id: int):
        """Stop a job for good (recorded as cancelled)."""
        return _action(job_id, runner.cancel)

    @app.delete("/api/jobs/{job_id}", tags=["training"], response_model=Deleted, summary="Delete a job",
                responses=_errors(404, 409))
    def job_delete(job_id: int):
        """Remove a job that is not running, with its files."""
        try:
            runner.delete(job_id)
        except (NoSuchJob, JobError) as e:
            raise _http(e)
        return {"deleted": job_id}

    @app.post("/api/jobs/{job_id}/export", tags=["training"], response_model=ExportResult,
              summary="Export a finished job's model, validated", responses=_errors(404, 409))
    def job_export(job_id: int):
        """ONNX (+ TensorRT engine where TensorRT exists) of a finished job, with the export's
        validation (ONNX Runtime against PyTorch)."""
        try:
            return runner.export(job_id)
        except (NoSuchJob, JobError) as e:
            raise _http(e)

    @app.get("/api/jobs/{job_id}/download", tags=["training"], response_class=FileResponse,
             summary="Download a finished job's model",
             responses={200: {"content": {"application/zip": {}}, "description": "zip"}, **_errors(404, 409)})
    def job_download(job_id: int):
        """A zip of the job's model (the export when there is one): ONNX, card, engine."""
        from ...formats.sigmf_io import temp_file_beside
        try:
            folder = runner.model_folder(job_id)
        except (NoSuchJob, JobError) as e:
            raise _http(e)
        out = runner.job_dir(job_id) / f"model-job{job_id}.zip"
        tmp = temp_file_beside(out, ".zip.tmp")
        try:
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
                for f in sorted(folder.iterdir()):
                    if f.is_file():
                        z.write(f, f"job{job_id}/{f.name}")
            os.replace(tmp, out)
        finally:
            Path(tmp).unlink(missing_ok=True)
        return FileResponse(out, media_type="application/zip", filename=out.name)

    @app.post("/api/jobs/{job_id}/install", tags=["training"], response_model=Installed,
              summary="Copy a job's model into --models", responses=_errors(400, 404, 409))
    def job_install(job_id: int, body: InstallRequest = Body(default=InstallRequest())):
        """Copy the job's model into ``--models`` as ``name`` (then /detect, the plugins and the
        Detector block can use it)."""
        name = body.name or f"job{job_id}"
        if not NAME_RE.match(name):
            raise HTTPException(400, f"model name {name!r}: letters, digits, '.', '_' and '-' only")
        try:
            dst = runner.install(job_id, name)
        except (NoSuchJob, JobError) as e:
            raise _http(e)
        return {"name": name, "path": str(dst)}

    @app.get("/api/jobs/{job_id}/events", tags=["training"], response_class=StreamingResponse,
             summary="A job's live progress (server-sent events)",
             responses={200: {"content": {"text/event-stream": {}}, "description": "event stream"},
                        **_errors(404)})
    async def job_events(job_id: int, request: Request):
        """Server-sent events: ``job`` (state, progress, utilisation) about twice a second and
        ``metrics`` (new per-epoch rows), until the job ends."""
        try:
            store.get(job_id)
        except NoSuchJob as e:
            raise _http(e)

        async def gen():
            seen, t0 = 0, time.monotonic()
            yield "retry: 1000\n\n"
            while time.monotonic() - t0 < SSE_MAX_S:
                if await request.is_disconnected():
                    return
                try:
                    j = await asyncio.to_thread(store.get, job_id)
                except NoSuchJob:
                    yield _sse({"deleted": job_id}, "deleted")
                    return
                rows = await asyncio.to_thread(store.metrics, job_id, seen)
                if rows:
                    seen = rows[-1]["seq"]
                    yield _sse(rows, "metrics")
                yield _sse({"id": j["id"], "state": j["state"], "progress": j["progress"], "error": j["error"],
                            "export": j["export"], "utilisation": runner.last_utilisation}, "job")
                if j["state"] in ("done", "failed", "cancelled"):
                    yield _sse({"state": j["state"]}, "end")
                    return
                await asyncio.sleep(0.5)
        return StreamingResponse(gen(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    # ------------------------------------------------------------ live view
    @app.get("/api/live", tags=["live"], response_model=LiveSummary, summary="The live subscription's summary")
    def live_summary():
        """The ZeroMQ subscription: counts per topic, model and label, losses, the last statistics."""
        return live.summary()

    @app.get("/api/live/events", tags=["live"], response_class=StreamingResponse,
             summary="Live detections and tracks (server-sent events)",
             responses={200: {"content": {"text/event-stream": {}}, "description": "event stream"}})
    async def live_events(request: Request, after: int = 0):
        """Server-sent events: ``records`` (batches of detection/track records, each with
        ``_seq``), ``summary`` once a second."""
        async def gen():
            seq, t0, last_summary = after, time.monotonic(), 0.0
            yield "retry: 1000\n\n"
            while time.monotonic() - t0 < SSE_MAX_S:
                if await request.is_disconnected():
                    return
                items = await asyncio.to_thread(live.since, seq, 0.5)
                if items:
                    seq = items[-1][0]
                    recs = [{**o, "_seq": n, "_topic": t} for n, t, o in items if t != "stats"][-500:]
                    if recs:
                        yield _sse(recs, "records")
                if time.monotonic() - last_summary > 1.0:
                    last_summary = time.monotonic()
                    yield _sse(live.summary(), "summary")
        return StreamingResponse(gen(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    return app
