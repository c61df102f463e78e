"""Request and response models of ``rfdetect serve``: they are what the OpenAPI schema
(``/openapi.json``, the ``/docs`` page) says of each endpoint, and the responses are
filtered through them, so a response never carries more than its model documents."""
from __future__ import annotations

from typing import Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field


class ErrorResponse(BaseModel):
    detail: str = Field(description="what is wrong, in one sentence (the parameter or part named)")


# ------------------------------------------------------------------ /detect
class BBox(BaseModel):
    x_min: float
    y_min: float
    x_max: float
    y_max: float


class Detection(BaseModel):
    bbox: BBox = Field(description="spectrogram pixels: x across frequency, y down time (for a recording: rows "
                                   "from its first sample at its spectrogram settings)")
    confidence: float = Field(ge=0.0, le=1.0)
    signal_name: str = Field(description="the model's label (energy: 'signal')")
    t_start: Optional[float] = Field(None, description="SigMF uploads only: seconds from the first sample")
    t_stop: Optional[float] = Field(None, description="SigMF uploads only: seconds from the first sample")
    f_low: Optional[float] = Field(None, description="SigMF uploads only: absolute Hz")
    f_high: Optional[float] = Field(None, description="SigMF uploads only: absolute Hz")
    models: Optional[list[str]] = Field(None, description="SigMF uploads only: the models that boxed it (of "
                                        "several joined by '+', or of those 'auto' ran)")


class DetectResponse(BaseModel):
    detections: list[Detection]
    timing_ms: float = Field(description="tile: the model's inference time; recording: the whole detect flowgraph's")


# ------------------------------------------------------------------ IQEngine plugins
class PluginParam(BaseModel):
    title: str
    type: str = Field(description="'number' or 'integer' (what IQEngine's client parses)")
    default: Union[int, float]
    value: Union[int, float] = Field(description="the same as default (IQEngine's form edits it)")


class PluginJobStatus(BaseModel):
    job_id: str
    function_name: str
    file_name: str
    progress: float = Field(description="0-100; 100 once the job ended, with 'error' when it failed")
    error: Optional[str] = None


class SigMFAnnotation(BaseModel):
    """A SigMF annotation as ``rfdetect detect --sigmf-out`` writes it (docs/schema.md)."""
    model_config = ConfigDict(extra="allow", populate_by_name=True)
    sample_start: int = Field(alias="core:sample_start", description="from the first sample of iq_file")
    sample_count: int = Field(alias="core:sample_count")
    freq_lower_edge: float = Field(alias="core:freq_lower_edge", description="absolute Hz")
    freq_upper_edge: float = Field(alias="core:freq_upper_edge", description="absolute Hz")
    label: str = Field(alias="core:label")
    generator: str = Field("gr-rfdetect", alias="core:generator")


class PluginResult(BaseModel):
    job_status: PluginJobStatus
    annotations: list[SigMFAnnotation] = Field(description="with the rfdetect: fields (score, model, track_id, "
                                                           "t_start, t_stop) besides the core: ones")
    metadata_file: dict[str, Any] = Field(description="the metadata_file sent")
    additionalProperties: dict[str, Any] = Field(description="model and timing_ms")


# ------------------------------------------------------------------ training jobs
class JobRequest(BaseModel):
    """A training job (or its estimate): empty tuned values take the auto-tuned ones."""
    recordings: list[str] = Field(description="paths of SigMF recordings under --data (at least one)")
    arch: str = Field("two_stage", description="two_stage, dense, anchor_free or faster_rcnn")
    device: str = Field("cpu", description="cpu, cuda or cuda:N")
    name: Optional[str] = None
    fft_size: Optional[int] = None
    hop: Optional[int] = None
    width: Optional[int] = None
    tile_height: Optional[int] = None
    overlap: Optional[int] = None
    epochs: Optional[int] = Field(None, description="override of the auto-tuned value")
    k_folds: Optional[int] = Field(None, description="override of the auto-tuned value (0: none)")
    batch_size: Optional[int] = Field(None, description="override of the auto-tuned value")
    lr: Optional[float] = Field(None, description="override of the auto-tuned value")
    early_stop: Optional[int] = Field(None, description="override of the auto-tuned value")
    max_minutes: Optional[float] = None
    threads: Optional[int] = None
    seed: Optional[int] = None


class Estimate(BaseModel):
    tiles: int
    labelled_tiles: int
    auto: dict[str, float] = Field(description="the auto-tuned values (training/autotune.py's table)")
    values: dict[str, float] = Field(description="the values the job will use: auto-tuned, overrides applied")
    row: str = Field(description="the table row the data size falls in")
    estimated_s: float = Field(description="upper bound (early stop ends sooner)")


class HistoryEntry(BaseModel):
    time: float
    state: str
    note: Optional[str] = None


class Job(BaseModel):
    id: int
    name: str
    state: str = Field(description="queued, running, paused, interrupted, cancelled, failed or done")
    device: str
    params: dict[str, Any]
    recordings: list[str]
    estimate: Optional[dict[str, Any]] = None
    created: float
    started: Optional[float] = None
    finished: Optional[float] = None
    progress: Optional[dict[str, Any]] = Field(None, description="stage, run, epoch/epochs, step/steps, loss, "
                                                                 "percent, last (the last epoch's metrics)")
    report: Optional[dict[str, Any]] = Field(None, description="the run's final report (report.json) and card")
    export: Optional[dict[str, Any]] = Field(None, description="the last export and its validation")
    error: Optional[str] = None
    resume: bool
    pid: Optional[int] = None


class JobDetail(Job):
    metrics: list[dict[str, Any]] = Field(description="per-epoch rows: seq, run, epoch, train_loss, val_loss, "
                                                      "val_ap50, val_map50, val_precision, val_recall, val_f1, ...")
    history: list[HistoryEntry]


class JobComparison(BaseModel):
    id: int
    name: str
    state: str
    arch: str
    epochs_run: Optional[int] = None
    val_loss: Optional[float] = None
    val_ap50: Optional[float] = None
    val_precision: Optional[float] = None
    val_recall: Optional[float] = None
    val_f1: Optional[float] = None
    pixel_mAP: Optional[float] = None
    pixel_AP50: Optional[float] = None
    macro_f1: Optional[float] = None
    physical_AP50: Optional[float] = None
    physical_recall: Optional[float] = None
    seconds: Optional[float] = None


class ExportResult(BaseModel):
    files: list[str]
    onnx_check: Optional[dict[str, Any]] = Field(None, description="ONNX Runtime against PyTorch: "
                                                                   "max_excess_error, atol, tiles")
    onnx_ok: bool
    tensorrt: Optional[str] = Field(None, description="the engine's file name, where TensorRT exists")
    tensorrt_note: Optional[str] = None
    seconds: float
    time: float
    log: list[str]


class InstallRequest(BaseModel):
    name: Optional[str] = Field(None, description="the model's name in --models (default jobN)")


class Installed(BaseModel):
    name: str
    path: str


class Deleted(BaseModel):
    deleted: int


# ------------------------------------------------------------------ recordings, models, service
class RecordingInfo(BaseModel):
    path: str
    sample_rate: Optional[float] = None
    center_freq: Optional[float] = None
    samples: Optional[int] = None
    seconds: Optional[float] = None
    datatype: Optional[str] = None
    annotations: Optional[int] = None
    labels: Optional[list[str]] = None
    error: Optional[str] = None


class RecordingDetectRequest(BaseModel):
    path: str = Field(description="a recording under --data")
    model: str = Field("auto", description="auto: the embedded model made for the recording's rate and centre "
                                           "frequency (`rfdetect detect`'s rule); or a model name")
    threshold: Optional[float] = Field(None, ge=0.0, le=1.0)
    fft_size: Optional[int] = None
    hop: Optional[int] = None
    width: Optional[int] = None
    tile_height: Optional[int] = None
    overlap: Optional[int] = None


class RecordingDetection(Detection):
    model: Optional[str] = None
    sample_start: int
    sample_count: int
    track_id: Optional[int] = None


class RecordingDetectResponse(BaseModel):
    model: str = Field(description="the model run (for auto, the one it picked)")
    detections: list[RecordingDetection]
    truth: list[dict[str, Any]] = Field(description="the recording's ground truth, record-shaped (s x Hz)")
    timing_ms: float
    image: str = Field(description="URL of a PNG with both drawn")


class ModelInfo(BaseModel):
    name: str
    card: Optional[dict[str, Any]] = Field(None, description="the model card (none for energy, and for auto: the "
                                                             "card of the model it picks per recording)")
    builtin: bool = False
    error: Optional[str] = None


class ServiceStatus(BaseModel):
    version: str
    data: str
    models: Optional[str] = None
    zmq: Optional[str] = None
    max_upload_bytes: int
    devices: list[str] = Field(description="where training jobs can run")
    utilisation: dict[str, Any]
    running: list[int]


class LiveSummary(BaseModel):
    address: Optional[str] = None
    subscribed: bool
    seq: int
    counts: dict[str, int]
    by_model: dict[str, int]
    labels: dict[str, int]
    lost: int
    stats: Optional[dict[str, Any]] = Field(None, description="the Detector's last rfdetect.stats/1 message")
    last_message_at: Optional[float] = None
