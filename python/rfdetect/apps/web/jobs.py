"""Training jobs: SQLite history under ``--data`` and ``rfdetect-train`` worker processes.

Each job is one ``rfdetect-train run`` process (prepare -> auto-tune -> train ->
evaluate -> export) on a selection of the recordings under ``--data``, with
``--progress-jsonl``: the runner thread follows that file and stores every epoch's
metrics in the database as it comes. One job runs at a time per device (``cpu``,
``cuda``, ``cuda:1``...); the others wait, queued, oldest first.

States: ``queued`` -> ``running`` -> ``done`` | ``failed`` | ``cancelled``; ``paused``
(stopped by the user: the process ends, its checkpoint stays) and ``interrupted`` (it
was running when the service stopped) go back to ``queued`` on resume, and the run
continues from its last checkpoint (``rfdetect-train run --resume``). Worker processes
die with the service (PR_SET_PDEATHSIG), so a job is never left running unseen.

Files of job N: ``DATA/.rfdetect-web/jobs/N/``: ``data/`` (links to the selected
recordings), ``model/`` (the run's output), ``progress.jsonl``, ``log.txt``, ``export/``.
"""
from __future__ import annotations

import ctypes
import json
import math
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional

from .detection import builtin_models

STATES = ("queued", "running", "paused", "interrupted", "cancelled", "failed", "done")
FINAL = ("cancelled", "failed", "done")
RESUMABLE = ("paused", "interrupted", "failed")
ARCHS = ("two_stage", "dense", "anchor_free", "faster_rcnn")
TUNED = ("epochs", "k_folds", "batch_size", "lr", "early_stop")
SPECTROGRAM_KEYS = ("fft_size", "hop", "width", "tile_height", "overlap")
STAGE_SPAN = {"prepare": (0, 5), "train": (5, 90), "profile": (90, 90), "evaluate": (90, 95), "export": (95, 100),
              "done": (100, 100)}
EXPORT_TIMEOUT_S = 600
STOP_GRACE_S = 10.0
WEB_DIR = ".rfdetect-web"

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
  id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, state TEXT NOT NULL, device TEXT NOT NULL,
  params TEXT NOT NULL, recordings TEXT NOT NULL, estimate TEXT, created REAL NOT NULL, started REAL,
  finished REAL, progress TEXT NOT NULL DEFAULT '{}', report TEXT, export TEXT, error TEXT,
  resume INTEGER NOT NULL DEFAULT 0, pid INTEGER);
CREATE TABLE IF NOT EXISTS metrics (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, job_id INTEGER NOT NULL, run TEXT NOT NULL, epoch INTEGER NOT NULL,
  data TEXT NOT NULL, UNIQUE (job_id, run, epoch));
CREATE TABLE IF NOT EXISTS history (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, job_id INTEGER NOT NULL, time REAL NOT NULL, state TEXT NOT NULL,
  note TEXT);
"""


def spectrogram_defaults() -> dict:
    """The spectrogram and tile settings ``rfdetect-train run`` uses when a job gives none."""
    from rfdetect_training.prepare import PrepareOptions
    o = PrepareOptions()
    return {"fft_size": o.params.fft_size, "hop": o.params.hop, "width": o.params.width,
            "tile_height": o.tile_height, "overlap": o.overlap}


class JobError(ValueError):
    """A request about a job that cannot be done (HTTP 400/409)."""


class NoSuchJob(LookupError):
    """HTTP 404."""


class JobStore:
    """The jobs database (one SQLite file, WAL; a connection per call, so any thread may use it)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)

    def _db(self):
        db = sqlite3.connect(self.path, timeout=10.0)
        db.row_factory = sqlite3.Row
        return db

    # ---------------------------------------------------------------- reads
    @staticmethod
    def _job(row) -> dict:
        d = dict(row)
        for k in ("params", "recordings", "estimate", "progress", "report", "export"):
            d[k] = json.loads(d[k]) if d.get(k) else None
        d["resume"] = bool(d["resume"])
        return d

    def get(self, job_id: int) -> dict:
        with self._db() as db:
            row = db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        if row is None:
            raise NoSuchJob(f"no training job {job_id}")
        return self._job(row)

    def list(self) -> list:
        with self._db() as db:
            return [self._job(r) for r in db.execute("SELECT * FROM jobs ORDER BY id DESC")]

    def metrics(self, job_id: int, after: int = 0) -> list:
        with self._db() as db:
            rows = db.execute("SELECT seq, run, epoch, data FROM metrics WHERE job_id=? AND seq>? ORDER BY seq",
                              (job_id, after)).fetchall()
        return [{"seq": r["seq"], "run": r["run"], "epoch": r["epoch"], **json.loads(r["data"])} for r in rows]

    def history(self, job_id: int) -> list:
        with self._db() as db:
            return [dict(r) for r in db.execute("SELECT time, state, note FROM history WHERE job_id=? ORDER BY seq",
                                                (job_id,))]

    # ---------------------------------------------------------------- writes
    def create(self, name, device, params, recordings, estimate) -> int:
        now = time.time()
        with self._db() as db:
            cur = db.execute("INSERT INTO jobs (name, state, device, params, recordings, estimate, created) "
                             "VALUES (?, 'queued', ?, ?, ?, ?, ?)",
                             (name, device, json.dumps(params), json.dumps(recordings), json.dumps(estimate), now))
            job_id = cur.lastrowid
            db.execute("INSERT INTO history (job_id, time, state, note) VALUES (?, ?, 'queued', 'created')",
                       (job_id, now))
        return job_id

    def update(self, job_id: int, **fields) -> None:
        for k in ("params", "progress", "report", "export", "estimate"):
            if k in fields and fields[k] is not None:
                fields[k] = json.dumps(fields[k])
        cols = ", ".join(f"{k}=?" for k in fields)
        with self._db() as db:
            db.execute(f"UPDATE jobs SET {cols} WHERE id=?", (*fields.values(), job_id))

    def set_state(self, job_id: int, state: str, note: str = "", only_from=None, **fields) -> bool:
        """Move the job to ``state`` (when it is in one of ``only_from``); -> whether it moved."""
        assert state in STATES
        now = time.time()
        with self._db() as db:
            cur = db.execute("SELECT state FROM jobs WHERE id=?", (job_id,)).fetchone()
            if cur is None:
                raise NoSuchJob(f"no training job {job_id}")
            if only_from is not None and cur["state"] not in only_from:
                return False
            for k in ("progress", "report", "export"):
                if k in fields and fields[k] is not None:
                    fields[k] = json.dumps(fields[k])
            cols = "".join(f", {k}=?" for k in fields)
            db.execute(f"UPDATE jobs SET state=?{cols} WHERE id=?", (state, *fields.values(), job_id))
            db.execute("INSERT INTO history (job_id, time, state, note) VALUES (?, ?, ?, ?)",
                       (job_id, now, state, note))
        return True

    def add_metrics(self, job_id: int, run: str, epoch: int, data: dict) -> None:
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO metrics (job_id, run, epoch, data) VALUES (?, ?, ?, ?)",
                       (job_id, run, epoch, json.dumps(data)))

    def delete(self, job_id: int) -> None:
        with self._db() as db:
            for t, col in (("metrics", "job_id"), ("history", "job_id"), ("jobs", "id")):
                db.execute(f"DELETE FROM {t} WHERE {col}=?", (job_id,))


# -------------------------------------------------------------------- estimates
def labelled_tiles(meta_path: Path, hop: int, tile_height: int, overlap: int) -> tuple[int, int]:
    """(tiles, tiles holding an annotation) that ``prepare`` would cut from a recording,
    from its metadata alone (no samples read)."""
    from ...formats.sigmf_io import SigMFRecording
    rec = SigMFRecording.open(meta_path)
    rows = rec.n_samples // hop
    step = max(1, tile_height - overlap)
    n = max(1, math.ceil(max(0, rows - overlap) / step))
    spans = [(int(a.get("core:sample_start", 0)) // hop,
              (int(a.get("core:sample_start", 0)) + int(a.get("core:sample_count", 0))) // hop)
             for a in rec.annotations]
    with_boxes = sum(1 for t in range(n) if any(s <= t * step + tile_height and e >= t * step for s, e in spans))
    return n, with_boxes


def estimate(recordings: list, params: dict) -> dict:
    """The auto-tuned values (training/autotune.py) for this selection, with overrides applied,
    and the estimated time."""
    from rfdetect_training.autotune import auto_tune
    tiles = labelled = 0
    for r in recordings:
        n, w = labelled_tiles(r, params["hop"], params["tile_height"], params["overlap"])
        tiles += n
        labelled += w
    arch = params["arch"]
    auto = auto_tune(labelled, arch, params["device"]).to_dict()
    tuned = auto_tune(labelled, arch, params["device"], {k: params.get(k) for k in TUNED}).to_dict()
    return {"tiles": tiles, "labelled_tiles": labelled, "auto": {k: auto[k] for k in TUNED},
            "values": {k: tuned[k] for k in TUNED}, "row": tuned["row"], "estimated_s": tuned["estimated_s"]}


# -------------------------------------------------------------------- utilisation
class Utilisation:
    """CPU utilisation from /proc/stat; GPU utilisation and memory from nvidia-smi where it exists."""

    def __init__(self):
        self._last = self._cpu_times()
        self._gpu_at = 0.0
        self._gpu = None
        self.smi = shutil.which("nvidia-smi")

    @staticmethod
    def _cpu_times():
        try:
            with open("/proc/stat") as f:
                v = [int(x) for x in f.readline().split()[1:]]
            return sum(v), v[3] + (v[4] if len(v) > 4 else 0)
        except (OSError, ValueError, IndexError):
            return None

    def sample(self) -> dict:
        out = {"cpu_percent": None, "cpus": os.cpu_count()}
        now = self._cpu_times()
        if now and self._last and now[0] > self._last[0]:
            total, idle = now[0] - self._last[0], now[1] - self._last[1]
            out["cpu_percent"] = round(100.0 * (1 - idle / total), 1)
        self._last = now or self._last
        if self.smi:
            if time.monotonic() - self._gpu_at > 2.0:
                self._gpu_at = time.monotonic()
                try:
                    p = subprocess.run([self.smi, "--query-gpu=name,utilization.gpu,memory.used,memory.total",
                                        "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=3)
                    self._gpu = [{"name": n.strip(), "util_percent": float(u), "memory_used_mb": float(m),
                                  "memory_total_mb": float(t)}
                                 for n, u, m, t in (line.split(",") for line in p.stdout.strip().splitlines())]
                except (OSError, subprocess.SubprocessError, ValueError):
                    self._gpu = None
            out["gpus"] = self._gpu
        return out


# -------------------------------------------------------------------- runner
def _die_with_parent():
    """preexec_fn: the worker gets SIGTERM when the service's runner thread dies."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class JobRunner:
    """Starts queued jobs (one per device), follows their progress, records how they end."""

    def __init__(self, store: JobStore, data_dir: Path, models_dir: Optional[Path], poll_s: float = 0.3,
                 stop_grace_s: float = STOP_GRACE_S):
        self.store = store
        self.data_dir = Path(data_dir)
        self.models_dir = Path(models_dir) if models_dir else None
        self.jobs_dir = self.data_dir / WEB_DIR / "jobs"
        self.poll_s = poll_s
        self.stop_grace_s = stop_grace_s  # after SIGTERM, how long a worker has before SIGKILL
        self.procs = {}  # job id -> {"proc", "offset", "log", "device"}
        self.stop_reason = {}  # job id -> "paused" | "cancelled", set before the process is ended
        self.utilisation = Utilisation()
        self.last_utilisation = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        self._wake = threading.Event()
        self._export_lock = threading.Lock()  # one export at a time: each one is a whole CPU for minutes

    def devices(self) -> list:
        """Where jobs can run: the CPU, and each GPU nvidia-smi lists."""
        gpus = (self.last_utilisation or {}).get("gpus") or []
        return ["cpu"] + (["cuda"] + [f"cuda:{i}" for i in range(len(gpus))] if gpus else [])

    def job_dir(self, job_id: int) -> Path:
        return self.jobs_dir / str(job_id)

    # ---------------------------------------------------------------- life
    def start(self):
        for j in self.store.list():  # the service stopped while these ran
            if j["state"] == "running":
                self.store.set_state(j["id"], "interrupted", "the service stopped while it ran; resume continues "
                                     "from its last checkpoint", pid=None)
        self._thread = threading.Thread(target=self._loop, name="rfdetect-jobs", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = STOP_GRACE_S):
        """Service shutdown: end the workers; their jobs become ``interrupted``."""
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout)
        with self._lock:
            items = list(self.procs.items())
        for job_id, p in items:
            self._terminate(p["proc"], self.stop_grace_s)
            self.store.set_state(job_id, "interrupted", "the service stopped while it ran", only_from=("running",),
                                 pid=None)

    # ---------------------------------------------------------------- actions
    def create(self, name: str, recordings: list, params: dict) -> int:
        est = estimate(recordings, params)
        job_id = self.store.create(name, params["device"], params, [str(r) for r in recordings], est)
        d = self.job_dir(job_id) / "data"
        d.mkdir(parents=True, exist_ok=True)
        for i, r in enumerate(recordings):  # the selection, as links (the data stays where it is)
            r = Path(r)
            base = r.name.removesuffix(".sigmf-meta")
            for suffix in (".sigmf-meta", ".sigmf-data"):
                src = r.with_name(base + suffix)
                if src.exists():
                    (d / f"{i:03d}_{base}{suffix}").symlink_to(src.resolve())
        self._wake.set()
        return job_id

    def pause(self, job_id: int):
        self._stop_job(job_id, "paused", "paused by the user (resume continues from the last checkpoint)")

    def cancel(self, job_id: int):
        self._stop_job(job_id, "cancelled", "cancelled by the user")

    def _stop_job(self, job_id: int, state: str, note: str):
        job = self.store.get(job_id)
        with self._lock:
            p = self.procs.get(job_id)
            if p is not None:
                self.stop_reason[job_id] = (state, note)
                # the runner loop kills it if SIGTERM has not ended it by then
                p.setdefault("kill_at", time.monotonic() + self.stop_grace_s)
        if p is not None:
            self._terminate(p["proc"], grace_s=None)
            return
        allowed = ("queued",) if state == "paused" else ("queued", "paused", "interrupted")
        if not self.store.set_state(job_id, state, note, only_from=allowed):
            raise JobError(f"job {job_id} is {job['state']}: it cannot be {state}")

    def resume(self, job_id: int):
        job = self.store.get(job_id)
        if not self.store.set_state(job_id, "queued", "resumed by the user", only_from=RESUMABLE, resume=1,
                                    error=None):
            raise JobError(f"job {job_id} is {job['state']}: only a paused, interrupted or failed job resumes")
        self._wake.set()

    def delete(self, job_id: int):
        job = self.store.get(job_id)
        with self._lock:
            if job_id in self.procs:
                raise JobError(f"job {job_id} is running: cancel it first")
        if job["state"] == "running":
            raise JobError(f"job {job_id} is running: cancel it first")
        self.store.delete(job_id)
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)

    # ---------------------------------------------------------------- loop
    def _loop(self):
        while not self._stop.is_set():
            try:
                self.last_utilisation = self.utilisation.sample()
                self._follow()
                self._schedule()
            except Exception as e:  # never let the runner die: say it and go on
                print(f"rfdetect serve: job runner: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            self._wake.wait(self.poll_s)
            self._wake.clear()

    @staticmethod
    def _device_key(device: str) -> str:
        return "cuda:0" if device == "cuda" else device  # torch's "cuda" is its first GPU

    def _schedule(self):
        with self._lock:
            busy = {self._device_key(p["device"]) for p in self.procs.values()}
        for j in sorted(self.store.list(), key=lambda j: j["id"]):
            if j["state"] == "queued" and self._device_key(j["device"]) not in busy:
                busy.add(self._device_key(j["device"]))
                self._launch(j)

    def _command(self, job: dict) -> list:
        p = job["params"]
        d = self.job_dir(job["id"])
        cmd = [sys.executable, "-m", "rfdetect_training.cli", "run", "--data", str(d / "data"),
               "--out", str(d / "model"), "--arch", p["arch"], "--device", p["device"],
               "--progress-jsonl", str(d / "progress.jsonl"), "--quiet", "--no-engine", "--no-torch"]
        for k in SPECTROGRAM_KEYS:
            cmd += [f"--{k.replace('_', '-')}", str(p[k])]
        for k in TUNED:
            if p.get(k) is not None:
                cmd += [f"--{k.replace('_', '-')}", str(p[k])]
        for k in ("max_minutes", "threads", "seed"):
            if p.get(k):
                cmd += [f"--{k.replace('_', '-')}", str(p[k])]
        if job["resume"]:
            cmd.append("--resume")
        return cmd

    def _launch(self, job: dict):
        d = self.job_dir(job["id"])
        d.mkdir(parents=True, exist_ok=True)
        cmd = self._command(job)
        log = open(d / "log.txt", "ab")
        log.write(f"\n$ {' '.join(cmd)}\n".encode())
        log.flush()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                cwd=str(d), start_new_session=True, preexec_fn=_die_with_parent)
        offset = (d / "progress.jsonl").stat().st_size if (d / "progress.jsonl").exists() else 0
        with self._lock:
            self.procs[job["id"]] = {"proc": proc, "offset": offset, "log": log, "device": job["device"]}
        self.store.set_state(job["id"], "running", "resumed from its last checkpoint" if job["resume"] else "started",
                             pid=proc.pid, started=job["started"] or time.time(), error=None)

    def _follow(self):
        with self._lock:
            items = list(self.procs.items())
        for job_id, p in items:
            self._read_progress(job_id, p)
            rc = p["proc"].poll()
            if rc is None:
                if time.monotonic() > p.get("kill_at", math.inf):
                    try:
                        os.killpg(p["proc"].pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                continue
            self._read_progress(job_id, p)
            p["log"].close()
            with self._lock:
                self.procs.pop(job_id, None)
                reason = self.stop_reason.pop(job_id, None)
            self._finished(job_id, rc, reason)

    def _read_progress(self, job_id: int, p: dict):
        path = self.job_dir(job_id) / "progress.jsonl"
        if not path.exists():
            return
        with open(path, "rb") as f:
            f.seek(p["offset"])
            chunk = f.read()
        end = chunk.rfind(b"\n")
        if end < 0:
            return
        p["offset"] += end + 1  # a line still being written waits for the next round
        job = self.store.get(job_id)
        prog = dict(job["progress"] or {})
        for line in chunk[:end].splitlines():
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            kind = ev.get("event")
            if kind == "stage":
                prog["stage"] = ev["stage"]
                if ev["stage"] not in ("train",):
                    prog.pop("step", None)
            elif kind == "step":
                prog.update({k: ev[k] for k in ("run", "epoch", "epochs", "step", "steps", "loss")})
            elif kind == "epoch":
                data = {k: v for k, v in ev.items() if k not in ("event", "run", "epoch")}
                self.store.add_metrics(job_id, ev.get("run", "final"), int(ev["epoch"]), data)
                prog.update({"run": ev.get("run"), "epoch": ev["epoch"], "epochs": ev.get("epochs"),
                             "step": None, "steps": None, "last": data})
        prog["percent"] = self._percent(prog)
        self.store.update(job_id, progress=prog)

    @staticmethod
    def _percent(prog: dict) -> float:
        lo, hi = STAGE_SPAN.get(prog.get("stage"), (0, 0))
        if prog.get("stage") == "train" and prog.get("epochs"):
            ep = (prog.get("epoch") or 1) - 1
            if prog.get("steps") and prog.get("step"):
                ep += prog["step"] / prog["steps"]
            elif "last" in prog and prog.get("step") is None:
                ep += 1
            return round(lo + (hi - lo) * min(1.0, ep / prog["epochs"]), 1)
        return float(lo)

    def _finished(self, job_id: int, rc: int, reason):
        d = self.job_dir(job_id)
        if reason is not None:
            self.store.set_state(job_id, reason[0], reason[1], pid=None)
            return
        if rc == 0:
            report = {}
            rp = d / "model" / "work" / "report" / "report.json"
            if rp.is_file():
                report = json.loads(rp.read_text())
            card = d / "model" / "model.card.json"
            if card.is_file():
                report["card"] = json.loads(card.read_text())
            prog = {**(self.store.get(job_id)["progress"] or {}), "stage": "done", "percent": 100.0}
            self.store.set_state(job_id, "done", "finished", pid=None, finished=time.time(), report=report,
                                 progress=prog)
        else:
            tail = ""
            try:
                tail = "\n".join((d / "log.txt").read_text(errors="replace").strip().splitlines()[-6:])
            except OSError:
                pass
            self.store.set_state(job_id, "failed", f"rfdetect-train ended with status {rc}", pid=None,
                                 finished=time.time(), error=tail or f"exit status {rc}")

    @staticmethod
    def _terminate(proc, grace_s: Optional[float]):
        """SIGTERM to the worker's group; with ``grace_s``, wait that long, then SIGKILL
        (None: return at once, the runner loop kills it at its ``kill_at``)."""
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        if grace_s is not None:
            try:
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(STOP_GRACE_S)  # SIGKILL cannot be refused: this returns at once

    # ---------------------------------------------------------------- export
    def export(self, job_id: int) -> dict:
        """ONNX (and a TensorRT engine where TensorRT exists) of a finished job's best
        checkpoint, checked against PyTorch by ``rfdetect-train export`` -> its validation."""
        job = self.store.get(job_id)
        if job["state"] != "done":
            raise JobError(f"job {job_id} is {job['state']}: only a finished job exports")
        if not self._export_lock.acquire(blocking=False):
            raise JobError("another export is still running: try again when it has finished")
        try:
            return self._export(job_id, job)
        finally:
            self._export_lock.release()

    def _export(self, job_id: int, job: dict) -> dict:
        d = self.job_dir(job_id)
        work = d / "model" / "work"
        tmp = d / "export.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        card = (job.get("report") or {}).get("card") or {}
        score = (card.get("thresholds") or {}).get("score", 0.5)
        cmd = [sys.executable, "-m", "rfdetect_training.cli", "export", "--tiles", str(work / "tiles"),
               "--checkpoint", str(work / "runs" / "final" / "best.pt"), "--out", str(tmp),
               "--report", str(work / "report" / "report.json"), "--score-threshold", str(score), "--no-torch"]
        run_card = d / "model" / "model.card.json"   # as it is now: `rfdetect-train profile` may have changed it
        card_now = json.loads(run_card.read_text()) if run_card.is_file() else {}
        if "profile_classifier" in card_now:
            cmd += ["--profile-from", str(d / "model")]   # fitted by the run, not by export: carried over
        confidence = (card_now.get("label_rule") or {}).get("class_confidence")
        if confidence is not None:   # the run's label rule (`--class-confidence auto` chooses it on validation tiles)
            cmd += ["--class-confidence", str(confidence)]
        t0 = time.monotonic()
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=EXPORT_TIMEOUT_S, cwd=str(d),
                               stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            shutil.rmtree(tmp, ignore_errors=True)
            raise JobError(f"export of job {job_id} took longer than {EXPORT_TIMEOUT_S} s: stopped") from None
        text = (p.stdout + p.stderr).strip()
        if p.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise JobError(f"export of job {job_id} failed: {text.splitlines()[-1] if text else p.returncode}")
        exported = json.loads((tmp / "model.card.json").read_text())
        engines = sorted(f.name for f in tmp.glob("*.engine"))
        result = {"files": sorted(f.name for f in tmp.iterdir()), "onnx_check": exported.get("onnx_check"),
                  "onnx_ok": True, "tensorrt": engines[0] if engines else None,
                  "tensorrt_note": None if engines else next(
                      (line for line in text.splitlines() if "TensorRT" in line), "no TensorRT engine"),
                  "seconds": round(time.monotonic() - t0, 1), "time": time.time(), "log": text.splitlines()[-5:]}
        final = d / "export"
        old = d / "export.old"
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
        self.store.update(job_id, export=result)
        return result

    def model_folder(self, job_id: int) -> Path:
        """The job's deliverable: the export when there is one, else the run's own ONNX model."""
        job = self.store.get(job_id)
        if job["state"] != "done":
            raise JobError(f"job {job_id} is {job['state']}: it has no model yet")
        d = self.job_dir(job_id)
        return d / "export" if (d / "export" / "model.onnx").is_file() else d / "model"

    def install(self, job_id: int, name: str) -> Path:
        """Copy the job's model into ``--models/NAME/`` (atomically: a folder renamed into place)."""
        if self.models_dir is None:
            raise JobError("the service was started without --models: nowhere to copy the model to")
        src = self.model_folder(job_id)
        dst = self.models_dir / name
        if dst.exists() or name in builtin_models():
            raise JobError(f"a model named {name!r} exists already; choose another name")
        self.models_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.models_dir / f".{name}.tmp{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for f in src.iterdir():
            if f.is_file() and (f.suffix in (".onnx", ".engine", ".pt") or f.name.endswith(".card.json")):
                shutil.copy2(f, tmp / f.name)
        os.rename(tmp, dst)
        return dst
