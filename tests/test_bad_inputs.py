"""Bad inputs: one clear error naming the problem, exit code 2, no partial output."""
import json
import shutil

import numpy as np
import pytest

from gnuradio.rfdetect.formats.sigmf_io import RecordingError, SigMFRecording, new_meta, write_archive, write_recording

from conftest import RATE, SMALL_ARGS, run_cli


def _copy(recording, tmp_path, name="r"):
    base = str(recording).removesuffix(".sigmf-meta")
    shutil.copy(base + ".sigmf-meta", tmp_path / f"{name}.sigmf-meta")
    shutil.copy(base + ".sigmf-data", tmp_path / f"{name}.sigmf-data")
    return tmp_path / f"{name}.sigmf-meta"


def _edit_meta(path, fn):
    meta = json.loads(path.read_text())
    fn(meta)
    path.write_text(json.dumps(meta))


def _nan(meta_path):
    data = meta_path.with_suffix(".sigmf-data")
    x = np.fromfile(data, np.complex64)
    x[12345] = np.nan
    x.tofile(data)


CASES = {
    "missing data": (lambda p: p.with_suffix(".sigmf-data").unlink(), "data file not found"),
    "malformed meta": (lambda p: p.write_text('{"global": {'), "malformed SigMF metadata JSON"),
    "JSON but not SigMF": (lambda p: p.write_text('[1, 2, 3]'), "not SigMF metadata"),
    "unsupported datatype": (lambda p: _edit_meta(p, lambda m: m["global"].update({"core:datatype": "cf16_le"})),
                             "unsupported datatype 'cf16_le'"),
    "real datatype": (lambda p: _edit_meta(p, lambda m: m["global"].update({"core:datatype": "rf32_le"})),
                      "real-valued"),
    "zero sample rate": (lambda p: _edit_meta(p, lambda m: m["global"].update({"core:sample_rate": 0})),
                         "core:sample_rate must be a positive number"),
    "truncated data": (lambda p: open(p.with_suffix(".sigmf-data"), "r+b").truncate(1000003), "truncated data"),
    "NaN samples": (_nan, "sample 12345 is NaN or Inf"),
    "random bytes as data": (lambda p: _random_bytes(p.with_suffix(".sigmf-data")), "is NaN or Inf"),
    "negative sample rate": (lambda p: _edit_meta(p, lambda m: m["global"].update({"core:sample_rate": -2e6})),
                             "core:sample_rate must be a positive number, got -2000000.0"),
    "shorter than one hop": (lambda p: open(p.with_suffix(".sigmf-data"), "r+b").truncate(8 * 300),
                             "fewer than one hop (512)"),
}


def _random_bytes(path):
    """Same size, random content: as cf32 some of it decodes to NaN / Inf."""
    path.write_bytes(np.random.default_rng(3).bytes(path.stat().st_size))


@pytest.mark.parametrize("case", list(CASES))
def test_bad_recording(case, recording, tmp_path):
    meta = _copy(recording, tmp_path)
    damage, message = CASES[case]
    damage(meta)
    out = tmp_path / "out.jsonl"
    proc = run_cli("detect", meta, "--model", "energy", "--out", out, "--sigmf-out", tmp_path / "ann", *SMALL_ARGS, check=False)
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and message in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    left = sorted(p.name for p in tmp_path.iterdir())
    assert not [n for n in left if n.startswith(("out.", "ann.", ".ann", ".out"))], left


@pytest.mark.parametrize("model,message", [("nope.onnx", "model not found"), ("corrupt", "corrupt or not ONNX"),
                                           ("nocard", "model card not found")])
def test_bad_model(model, message, recording, tmp_path):
    if model == "corrupt":
        (tmp_path / "m.onnx").write_bytes(b"this is not a protobuf" * 10)
        (tmp_path / "m.card.json").write_text(json.dumps({
            "schema": "rfdetect.model_card/1", "name": "m", "labels": ["a"],
            "input": {"shape": [1, 1, 128, 512]}, "output": {"format": "boxes_scores_labels/1"},
            "spectrogram": {"fft_size": 1024, "hop": 512, "width": 512}}))
        model = tmp_path / "m.onnx"
    elif model == "nocard":
        (tmp_path / "n.onnx").write_bytes(b"x")
        model = tmp_path / "n.onnx"
    out = tmp_path / "o.jsonl"
    proc = run_cli("detect", recording, "--model", model, "--out", out, *SMALL_ARGS, check=False)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert not out.exists()


def test_recording_shorter_than_one_hop(tmp_path):
    write_recording(tmp_path / "s", np.zeros(100, np.complex64), new_meta(RATE, "cf32_le"))
    proc = run_cli("detect", tmp_path / "s.sigmf-meta", "--model", "energy", "--out", tmp_path / "o.jsonl", *SMALL_ARGS, check=False)
    assert proc.returncode == 2 and "fewer than one hop" in proc.stderr


@pytest.mark.parametrize("datatype", ["ci16_le", "ci8", "cu8", "cf32_be"])
def test_integer_datatypes_and_archives_read_back(datatype, tmp_path):
    rng = np.random.default_rng(2)
    x = (0.3 * (rng.standard_normal(5000) + 1j * rng.standard_normal(5000))).astype(np.complex64)
    x = np.clip(x.real, -0.99, 0.99) + 1j * np.clip(x.imag, -0.99, 0.99)
    meta = new_meta(RATE, datatype, 1e9, datetime="2026-01-01T00:00:00.5Z")
    write_recording(tmp_path / "d", x, meta)
    rec = SigMFRecording.open(tmp_path / "d.sigmf-meta")
    y = rec.read(0, rec.n_samples)
    tol = {"ci16_le": 1e-4, "ci8": 1e-2, "cu8": 1e-2, "cf32_be": 0}[datatype]
    assert np.max(np.abs(y - x)) <= tol
    assert rec.captures[0].unix_time == pytest.approx(1767225600.5)
    arc = write_archive(tmp_path / "d", tmp_path / "d.sigmf")
    ra = SigMFRecording.open(arc)
    assert np.array_equal(ra.read(100, 50), y[100:150])


def test_capture_beyond_the_data_is_reported_as_truncation(tmp_path):
    meta = new_meta(RATE, "cf32_le")
    meta["captures"].append({"core:sample_start": 10_000, "core:frequency": 1.0})
    write_recording(tmp_path / "c", np.zeros(100, np.complex64), meta)
    with pytest.raises(RecordingError, match="capture 1 starts at sample 10000"):
        SigMFRecording.open(tmp_path / "c.sigmf-meta")


def test_recording_shorter_than_one_fft_but_one_hop_runs(recording, tmp_path):
    meta = _copy(recording, tmp_path)
    open(meta.with_suffix(".sigmf-data"), "r+b").truncate(8 * 700)  # fft 1024, hop 512
    proc = run_cli("detect", meta, "--model", "energy", "--out", tmp_path / "o.jsonl", "--quiet", *SMALL_ARGS)
    assert "; 1 tiles;" in proc.stderr and (tmp_path / "o.jsonl").exists(), proc.stderr


def test_missing_capture_frequency_gives_baseband_offsets_and_says_so(recording, tmp_path):
    meta = _copy(recording, tmp_path)
    _edit_meta(meta, lambda m: [c.pop("core:frequency", None) for c in m["captures"]])
    proc = run_cli("detect", meta, "--model", "energy", "--out", tmp_path / "o.jsonl", "--quiet", *SMALL_ARGS)
    assert "gives no core:frequency" in proc.stdout + proc.stderr
    from gnuradio.rfdetect.formats.records import read_jsonl
    recs = read_jsonl(tmp_path / "o.jsonl")
    assert recs and all(-RATE / 2 <= r["f_low"] < r["f_high"] <= RATE / 2 for r in recs)


def test_a_20_gb_sparse_recording_streams_in_bounded_memory(tmp_path):
    """Open and play 60 M samples (120 MB) of a 20 GB file through the source and the STFT:
    the file is streamed, never loaded."""
    import subprocess
    import sys
    base = tmp_path / "huge file é"
    data = base.with_suffix(".sigmf-data")
    with open(data, "wb") as f:
        f.truncate(20 * 1024 ** 3)  # sparse: takes no disk
    meta = base.with_suffix(".sigmf-meta")
    meta.write_text(json.dumps(new_meta(RATE, "ci8", 915e6)))
    code = f"""
import time
from gnuradio import blocks, gr, rfdetect
t = time.perf_counter()
src = rfdetect.sigmf_source({str(meta)!r})
assert src.recording.n_samples == 10 * 1024 ** 3, src.recording.n_samples
opened = time.perf_counter() - t
tb = gr.top_block()
stft = rfdetect.stft_tile(fft_size=1024, hop=512, width=512, device="cpu")
tb.connect(src, blocks.head(gr.sizeof_gr_complex, 60_000_000), stft, blocks.null_sink(4 * 512))
tb.run()
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent (pytest, with torch loaded)
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(opened, hwm / 1024)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    opened, peak_mb = map(float, proc.stdout.split()[-2:])
    assert opened < 2.0  # opening does not read the 20 GB
    assert peak_mb < 400, f"peak resident memory {peak_mb:.0f} MB"  # ~140 MB measured


def _source_samples(meta, repeat_items=None, **kw):
    from gnuradio import blocks, gr

    from gnuradio import rfdetect
    tb = gr.top_block()
    src = rfdetect.sigmf_source(str(meta), repeat=repeat_items is not None, **kw)
    snk = blocks.vector_sink_c()
    if repeat_items is None:
        tb.connect(src, snk)
    else:
        tb.connect(src, blocks.head(gr.sizeof_gr_complex, repeat_items), snk)
    tb.run()
    return src, np.array(snk.data(), np.complex64)


@pytest.mark.parametrize("datatype", ["cf32_le", "ci16_le"])
def test_sigmf_source_gives_the_files_samples_and_zeroes_nan_when_asked(datatype, tmp_path):
    """cf32 is read straight into GNU Radio's buffer, other types are converted: both give
    the file's samples (also across a repeat), and nan_policy='zero' zeroes exactly the
    non-finite ones."""
    rng = np.random.default_rng(5)
    x = (0.3 * (rng.standard_normal(70_000) + 1j * rng.standard_normal(70_000))).astype(np.complex64)
    write_recording(tmp_path / "s", x, new_meta(RATE, datatype))
    meta = tmp_path / "s.sigmf-meta"
    want = SigMFRecording.open(meta).read(0, len(x))
    _, got = _source_samples(meta, repeat_items=2 * len(x) + 123)
    assert np.array_equal(got, np.concatenate([want, want, want[:123]]))
    if datatype != "cf32_le":
        return
    x[[7, 50_001]] = [np.nan + 0j, complex(1.0, np.inf)]
    write_recording(tmp_path / "s", x, new_meta(RATE, datatype))
    src, got = _source_samples(meta, nan_policy="zero")
    assert src.nonfinite_replaced == 2
    assert got[7] == 0 and got[50_001] == 0
    keep = np.ones(len(x), bool)
    keep[[7, 50_001]] = False
    assert np.array_equal(got[keep], x[keep])
    src, got = _source_samples(meta)
    assert "sample 7 is NaN or Inf" in src.error
