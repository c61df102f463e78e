"""SigMF recordings: reading IQ in bounded chunks, and writing files atomically.

Only the standard library and NumPy are used, so the reader runs on training boxes
without GNU Radio. Every problem with a recording raises :class:`RecordingError`
with one sentence that names the file and the problem.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import tarfile
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Optional

import numpy as np

SIGMF_VERSION = "1.2.0"

# complex datatypes: component dtype and the scale that maps full scale to 1.0
_COMPONENTS = {
    "f32": ("f4", 1.0, 0.0),
    "f64": ("f8", 1.0, 0.0),
    "i32": ("i4", 1.0 / 2 ** 31, 0.0),
    "i16": ("i2", 1.0 / 2 ** 15, 0.0),
    "i8": ("i1", 1.0 / 2 ** 7, 0.0),
    "u8": ("u1", 1.0 / 127.5, 127.5),
    "u16": ("u2", 1.0 / 32767.5, 32767.5),
}
SUPPORTED_DATATYPES = sorted(
    [f"c{c}_{e}" for c in _COMPONENTS if c not in ("i8", "u8") for e in ("le", "be")] + ["ci8", "cu8"])


class RecordingError(ValueError):
    """A SigMF recording that cannot be used, with the reason."""


def parse_datatype(datatype: str, where: str = "") -> tuple[np.dtype, float, float]:
    """SigMF datatype string -> (component dtype, scale, offset)."""
    if not isinstance(datatype, str) or not datatype:
        raise RecordingError(f"{where}core:datatype is missing or not a string")
    if datatype.startswith("r"):
        raise RecordingError(
            f"{where}datatype {datatype!r} is real-valued; rfdetect needs complex IQ "
            f"(supported: {', '.join(SUPPORTED_DATATYPES)})")
    if datatype not in SUPPORTED_DATATYPES:
        raise RecordingError(
            f"{where}unsupported datatype {datatype!r} (supported: {', '.join(SUPPORTED_DATATYPES)})")
    comp = datatype[1:].split("_")[0]
    code, scale, offset = _COMPONENTS[comp]
    endian = ">" if datatype.endswith("_be") else "<"
    return np.dtype(endian + code), scale, offset


@dataclass
class Capture:
    sample_start: int
    frequency: float
    datetime: Optional[str] = None

    @property
    def unix_time(self) -> Optional[float]:
        return iso_to_unix(self.datetime) if self.datetime else None


def iso_to_unix(text: str) -> float:
    t = text.strip().replace("Z", "+00:00")
    # fromisoformat in 3.11 accepts up to microseconds; SigMF allows more digits
    if "." in t:
        head, frac = t.split(".", 1)
        digits = "".join(ch for ch in frac if ch.isdigit())
        tz = frac[len(digits):]
        t = f"{head}.{digits[:6].ljust(6, '0')}{tz}"
        extra = float("0." + digits[6:]) * 1e-6 if len(digits) > 6 else 0.0
    else:
        extra = 0.0
    dt = _dt.datetime.fromisoformat(t)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=_dt.timezone.utc)
    return dt.timestamp() + extra


def unix_to_iso(t: float) -> str:
    whole = math.floor(t)
    frac = t - whole
    base = _dt.datetime.fromtimestamp(whole, tz=_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{int(round(frac * 1e9)):09d}Z" if frac else base + "Z"


def _split_path(path: Path) -> tuple[Path, Optional[Path]]:
    """-> (meta path or archive path, data path or None for archives)."""
    s = str(path)
    if s.endswith(".sigmf"):
        return path, None
    for ext in (".sigmf-meta", ".sigmf-data"):
        if s.endswith(ext):
            s = s[: -len(ext)]
            break
    return Path(s + ".sigmf-meta"), Path(s + ".sigmf-data")


@dataclass
class SigMFRecording:
    """An opened recording: metadata checked, data located, nothing loaded."""

    meta_path: Path
    data_path: Path
    meta: dict
    data_offset: int = 0  # byte offset of the samples (non-zero inside a .sigmf archive)
    data_bytes: int = 0
    component: np.dtype = field(default_factory=lambda: np.dtype("<f4"))
    scale: float = 1.0
    offset: float = 0.0

    @classmethod
    def open(cls, path) -> "SigMFRecording":
        path = Path(path)
        meta_path, data_path = _split_path(path)
        if data_path is None:
            return cls._open_archive(meta_path)
        if not meta_path.is_file():
            raise RecordingError(f"SigMF metadata file not found: {meta_path}")
        if not data_path.is_file():
            raise RecordingError(f"SigMF data file not found: {data_path} (the .sigmf-meta has no .sigmf-data beside it)")
        meta = _parse_meta(meta_path.read_bytes(), str(meta_path))
        return cls._build(meta_path, data_path, meta, 0, data_path.stat().st_size)

    @classmethod
    def _open_archive(cls, archive: Path) -> "SigMFRecording":
        if not archive.is_file():
            raise RecordingError(f"SigMF archive not found: {archive}")
        try:
            with tarfile.open(archive, "r:") as tar:
                members = tar.getmembers()
                metas = [m for m in members if m.name.endswith(".sigmf-meta")]
                if len(metas) != 1:
                    raise RecordingError(
                        f"SigMF archive {archive} must hold exactly one .sigmf-meta, found {len(metas)}")
                want = metas[0].name[: -len(".sigmf-meta")] + ".sigmf-data"
                datas = [m for m in members if m.name == want]
                if not datas:
                    raise RecordingError(f"SigMF archive {archive} has no {want}")
                meta = _parse_meta(tar.extractfile(metas[0]).read(), f"{archive}:{metas[0].name}")
                return cls._build(archive, archive, meta, datas[0].offset_data, datas[0].size)
        except tarfile.TarError as e:
            raise RecordingError(f"SigMF archive {archive} is not a readable (uncompressed) tar file: {e}") from None

    @classmethod
    def _build(cls, meta_path, data_path, meta, data_offset, data_bytes) -> "SigMFRecording":
        where = f"{meta_path}: "
        g = meta["global"]
        component, scale, offset = parse_datatype(g.get("core:datatype"), where)
        rate = g.get("core:sample_rate")
        if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not math.isfinite(rate) or rate <= 0:
            raise RecordingError(f"{where}core:sample_rate must be a positive number, got {rate!r}")
        channels = g.get("core:num_channels", 1)
        if channels != 1:
            raise RecordingError(f"{where}core:num_channels={channels}: only single-channel recordings are supported")
        rec = cls(Path(meta_path), Path(data_path), meta, data_offset, data_bytes, component, scale, offset)
        item = rec.bytes_per_sample
        if data_bytes % item:
            raise RecordingError(
                f"{data_path}: truncated data: {data_bytes} bytes is not a whole number of "
                f"{item}-byte {g['core:datatype']} samples")
        caps = rec.captures
        for i, c in enumerate(caps):
            if c.sample_start >= max(rec.n_samples, 1):
                raise RecordingError(
                    f"{data_path}: truncated data: capture {i} starts at sample {c.sample_start} "
                    f"but the file holds only {rec.n_samples} samples")
        return rec

    @property
    def bytes_per_sample(self) -> int:
        return 2 * self.component.itemsize

    @property
    def n_samples(self) -> int:
        return self.data_bytes // self.bytes_per_sample

    @property
    def sample_rate(self) -> float:
        return float(self.meta["global"]["core:sample_rate"])

    @property
    def datatype(self) -> str:
        return self.meta["global"]["core:datatype"]

    @property
    def captures(self) -> list[Capture]:
        caps = self.meta.get("captures") or [{"core:sample_start": 0}]
        out = []
        for i, c in enumerate(caps):
            if not isinstance(c, dict):
                raise RecordingError(f"{self.meta_path}: captures[{i}] is not an object")
            start = c.get("core:sample_start", 0)
            if not isinstance(start, int) or isinstance(start, bool) or start < 0:
                raise RecordingError(f"{self.meta_path}: captures[{i}] core:sample_start must be a non-negative integer")
            freq = c.get("core:frequency", 0.0)  # baseband when absent (documented)
            if not isinstance(freq, (int, float)) or isinstance(freq, bool) or not math.isfinite(freq):
                raise RecordingError(f"{self.meta_path}: captures[{i}] core:frequency must be a number")
            when = c.get("core:datetime")
            if when is not None:
                try:
                    iso_to_unix(when)
                except (ValueError, TypeError, AttributeError):
                    raise RecordingError(f"{self.meta_path}: captures[{i}] core:datetime {when!r} is not ISO 8601") from None
            out.append(Capture(start, float(freq), when))
        return sorted(out, key=lambda c: c.sample_start)

    @property
    def frequency_known(self) -> bool:
        return any("core:frequency" in c for c in (self.meta.get("captures") or []) if isinstance(c, dict))

    @property
    def center_frequency(self) -> float:
        return self.captures[0].frequency

    @property
    def annotations(self) -> list[dict]:
        return list(self.meta.get("annotations") or [])

    def capture_at(self, sample: int) -> Capture:
        cur = self.captures[0]
        for c in self.captures:
            if c.sample_start <= sample:
                cur = c
        return cur

    def read(self, start: int, count: int) -> np.ndarray:
        """Samples [start, start+count) as complex64 (fewer at the end of the file)."""
        start = max(0, int(start))
        count = max(0, min(int(count), self.n_samples - start))
        with open(self.data_path, "rb") as f:
            f.seek(self.data_offset + start * self.bytes_per_sample)
            raw = f.read(count * self.bytes_per_sample)
        return self._convert(raw)

    def _convert(self, raw: bytes) -> np.ndarray:
        comp = np.frombuffer(raw, dtype=self.component)
        if self.component == np.dtype("<f4"):
            return comp.view(np.complex64).copy()
        c = comp.astype(np.float32)
        if self.offset:
            c -= np.float32(self.offset)
        if self.scale != 1.0:
            c *= np.float32(self.scale)
        return c.view(np.complex64)

    def chunks(self, chunk: int = 1 << 18, start: int = 0) -> Iterator[tuple[int, np.ndarray]]:
        with open(self.data_path, "rb") as f:
            f.seek(self.data_offset + start * self.bytes_per_sample)
            pos = start
            while pos < self.n_samples:
                n = min(chunk, self.n_samples - pos)
                raw = f.read(n * self.bytes_per_sample)
                if len(raw) < n * self.bytes_per_sample:
                    raise RecordingError(f"{self.data_path}: truncated data: file ended at sample {pos}")
                yield pos, self._convert(raw)
                pos += n


def find_sigmf_files(folder) -> list[Path]:
    """Every SigMF recording (``*.sigmf-meta``, ``*.sigmf`` archives) under ``folder``, sorted,
    through folder links too: a corpus assembled from linked folders is read whole (Path.rglob
    does not enter a linked folder). A folder reached twice, by a link loop or two links to
    one place, is read once."""
    out, seen = [], set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        out += [Path(root) / f for f in files if f.endswith((".sigmf-meta", ".sigmf"))]
    return sorted(out)


def _parse_meta(raw: bytes, where: str) -> dict:
    try:
        meta = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise RecordingError(f"malformed SigMF metadata in {where}: not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise RecordingError(f"malformed SigMF metadata JSON in {where}: {e}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("global"), dict):
        raise RecordingError(f"{where} is JSON but not SigMF metadata: it has no \"global\" object")
    for key in ("captures", "annotations"):
        if key in meta and not isinstance(meta[key], list):
            raise RecordingError(f"{where}: \"{key}\" must be a list")
    return meta


# ---------------------------------------------------------------- writing
_UMASK_LOCK = threading.Lock()


def new_file_mode(path) -> int:
    """The permission bits a file written over ``path`` should get: those of the file it
    replaces, else what ``open()`` gives a new file (0o666 less the umask). A temporary
    file from ``tempfile.mkstemp`` is 0o600, so without this every recording, card and
    report renamed into place would be readable by its owner only (a recording made by
    a flowgraph's service user, unreadable to the analyst or the web service)."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        pass
    try:  # Linux says the umask without changing it
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:
        umask = os.umask(0o022)
        os.umask(umask)
    return 0o666 & ~umask


def temp_file_beside(path, suffix: str = ".tmp") -> str:
    """A new, empty, closed temporary file in ``path``'s folder with ``new_file_mode(path)``,
    for writers that fill it by name (tarfile, zipfile) and then rename it over ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", suffix=suffix, dir=path.parent or ".")
    try:
        os.fchmod(fd, new_file_mode(path))
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    return tmp


@contextlib.contextmanager
def atomic_file(path, mode: str = "wb", **kw):
    """Open a temporary file in ``path``'s folder for writing; on a clean exit it is
    fsynced and renamed over ``path``, on an exception removed: readers see the old
    file or the new one, never half of one. The file gets ``new_file_mode(path)``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", suffix=".tmp", dir=path.parent or ".")
    try:
        os.fchmod(fd, new_file_mode(path))
        with os.fdopen(fd, mode, **kw) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_bytes(path, data: bytes) -> None:
    with atomic_file(path) as f:
        f.write(data)


def atomic_write_json(path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode("utf-8"))


def annotation_key(a: dict) -> tuple:
    """SigMF wants annotations in ascending core:sample_start (sigmf-python's validator
    checks it); ties broken so that the order is reproducible."""
    return (a.get("core:sample_start", 0), a.get("core:sample_count", 0), a.get("core:freq_lower_edge", 0.0))


def sort_annotations(annotations: list[dict]) -> list[dict]:
    return sorted(annotations, key=annotation_key)


def atomic_write_meta_stream(path, meta: dict, annotations: Iterable[dict]) -> int:
    """Write a .sigmf-meta atomically with ``meta``'s global and captures and the
    ``annotations`` taken one at a time from an iterable (already in SigMF order), so a
    file of millions of annotations never sits in memory as one object. One annotation
    per line. -> number of annotations written."""
    head = {k: v for k, v in meta.items() if k != "annotations"}
    n = 0
    with atomic_file(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(head, indent=2)[:-2].rstrip() + ',\n  "annotations": [')
        for a in annotations:
            f.write(("\n    " if n == 0 else ",\n    ") + json.dumps(a, sort_keys=True))
            n += 1
        f.write("\n  ]\n}\n" if n else "]\n}\n")
    return n


def new_meta(sample_rate: float, datatype: str, frequency: float = 0.0, datetime: Optional[str] = None,
             description: str = "", extra_global: Optional[dict] = None) -> dict:
    g = {"core:datatype": datatype, "core:sample_rate": float(sample_rate), "core:version": SIGMF_VERSION,
         "core:recorder": "gr-rfdetect"}
    if description:
        g["core:description"] = description
    g.update(extra_global or {})
    cap = {"core:sample_start": 0, "core:frequency": float(frequency)}
    if datetime:
        cap["core:datetime"] = datetime
    return {"global": g, "captures": [cap], "annotations": []}


def encode_samples(iq: np.ndarray, datatype: str) -> bytes:
    component, scale, offset = parse_datatype(datatype)
    comp = np.asarray(iq, dtype=np.complex64).view(np.float32).astype(np.float64)
    if component.kind in "iu":
        info = np.iinfo(component)
        comp = np.clip(np.round(comp / scale + offset), info.min, info.max)
    return comp.astype(component).tobytes()


def write_recording(base, iq: np.ndarray, meta: dict) -> tuple[Path, Path]:
    """Write ``base.sigmf-data`` and ``base.sigmf-meta`` atomically (data first)."""
    base = Path(str(base).removesuffix(".sigmf-meta").removesuffix(".sigmf-data"))
    base.parent.mkdir(parents=True, exist_ok=True)
    data_path = Path(str(base) + ".sigmf-data")
    meta_path = Path(str(base) + ".sigmf-meta")
    atomic_write_bytes(data_path, encode_samples(iq, meta["global"]["core:datatype"]))
    meta = dict(meta)
    meta["annotations"] = sort_annotations(meta.get("annotations", []))
    atomic_write_json(meta_path, meta)
    return meta_path, data_path


def write_archive(base, out_path) -> Path:
    """Pack ``base.sigmf-meta``/``-data`` into a ``.sigmf`` archive (atomically)."""
    base = Path(base)
    out_path = Path(out_path)
    tmp = temp_file_beside(out_path)
    try:
        with tarfile.open(tmp, "w") as tar:
            for ext in (".sigmf-meta", ".sigmf-data"):
                tar.add(str(base) + ext, arcname=f"{out_path.stem}/{out_path.stem}{ext}")
        os.replace(tmp, out_path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return out_path
