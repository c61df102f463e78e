"""GRC: every block YAML loads through GRC's own platform; every example compiles with grcc;
the headless example runs to completion and yields detections."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
from gnuradio import gr
from gnuradio.grc.core.platform import Platform

from gnuradio.rfdetect.records import read_jsonl, validate_record

from conftest import ROOT

BLOCK_FILES = sorted((ROOT / "grc").glob("*.block.yml"))
EXAMPLES = sorted((ROOT / "examples").glob("*.grc"))


@pytest.fixture(scope="module")
def platform():
    os.environ["GRC_BLOCKS_PATH"] = str(ROOT / "grc")
    p = Platform(name="rfdetect test", prefs=gr.prefs(), version=gr.version(),
                 version_parts=(gr.major_version(), gr.api_version(), gr.minor_version()))
    p.build_library()
    return p


def test_there_is_a_yaml_per_block():
    ids = {f.name.removesuffix(".block.yml") for f in BLOCK_FILES}
    assert ids == {f"rfdetect_{b}" for b in ("sigmf_source", "stft_tile", "detector", "nms_merge",
                                             "track_assigner", "zmq_pub_sink", "sigmf_annotation_sink",
                                             "jsonl_sink")}


@pytest.mark.parametrize("path", BLOCK_FILES, ids=lambda p: p.name)
def test_block_yaml_loads_and_documents_every_parameter(platform, path):
    key = path.name.removesuffix(".block.yml")
    assert key in platform.blocks, f"GRC did not load {path.name}"
    fg = platform.make_flow_graph()
    blk = fg.new_block(key)
    assert blk is not None
    doc = blk.documentation.get("", "") if isinstance(blk.documentation, dict) else str(blk.documentation)
    for pid, param in blk.params.items():
        if pid in ("id", "alias", "affinity", "minoutbuf", "maxoutbuf", "comment"):
            continue
        assert param.name.split(" (")[0].lower() in doc.lower(), f"{key}: parameter {param.name!r} undocumented"
    # the make template must render with the defaults and name only real keyword arguments
    import inspect
    from gnuradio import rfdetect
    cls = getattr(rfdetect, key.removeprefix("rfdetect_"))
    accepted = set(inspect.signature(cls.__init__).parameters)
    for pid in blk.params:
        if pid not in ("id", "alias", "affinity", "minoutbuf", "maxoutbuf", "comment"):
            assert pid in accepted, f"{key}: YAML parameter {pid} is not a constructor argument"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_compiles_with_grcc(path, tmp_path, grc_env):
    proc = subprocess.run(["grcc", "-o", str(tmp_path), str(path)], capture_output=True, text=True,
                          env=grc_env, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / (path.stem + ".py")).exists()


def run_example(name, recording, tmp_path, grc_env, *args):
    """Compile examples/NAME.grc with grcc and run it headless on ``recording`` at the
    tests' small spectrogram settings; -> (process, JSONL output path)."""
    subprocess.run(["grcc", "-o", str(tmp_path), str(ROOT / "examples" / f"{name}.grc")], check=True,
                   capture_output=True, env=grc_env, timeout=120)
    out = tmp_path / f"{name}.jsonl"
    proc = subprocess.run([sys.executable, str(tmp_path / f"{name}.py"), "--recording", str(recording),
                           "--out", str(out), "--sigmf-out", str(tmp_path / name), "--zmq-address",
                           "tcp://127.0.0.1:0", "--fft-size", "1024", "--hop", "512", "--width", "512",
                           "--tile-height", "128", "--overlap", "16", *args],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    return proc, out


def test_headless_example_runs_and_detects(recording, tmp_path, grc_env):
    proc, out = run_example("file_detect", recording, tmp_path, grc_env, "--models", "energy")
    assert proc.returncode == 0, proc.stderr
    recs = read_jsonl(out)
    assert sum(r["event"] == "new" for r in recs) >= 3
    for r in recs:
        validate_record(r)
    assert (tmp_path / "file_detect.sigmf-meta").exists()


def test_cmake_installs_package_blocks_and_examples(tmp_path, monkeypatch):
    build = tmp_path / "build"
    build.mkdir()
    prefix = tmp_path / "prefix"
    for cmd in (["cmake", str(ROOT), f"-DCMAKE_INSTALL_PREFIX={prefix}"], ["make", "install"]):
        proc = subprocess.run(cmd, cwd=build, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    assert list(prefix.rglob("gnuradio/rfdetect/stft_tile.py"))
    assert len(list(prefix.rglob("grc/blocks/rfdetect_*.block.yml"))) == len(BLOCK_FILES)
    assert (prefix / "share/gr-rfdetect/examples/file_detect.grc").exists()
    # the compiled spectrogram kernel, built by CMake, loads and gives the rows pip's build gives
    import numpy as np

    from gnuradio.rfdetect import compiled_rows
    from gnuradio.rfdetect.spectrogram import KERNEL_TOLERANCE, SpectrogramEngine
    from conftest import SMALL
    kernel, = prefix.rglob("gnuradio/rfdetect/_stft_rows.so")
    x = (np.random.default_rng(3).standard_normal(20 * SMALL.hop) * (1 + 1j)).astype(np.complex64)
    pip_rows = SpectrogramEngine(SMALL, kernel="compiled").compute(x, 19)
    monkeypatch.setattr(compiled_rows, "_HERE", str(kernel.parent))
    monkeypatch.setattr(compiled_rows, "_lib", None)
    cmake_rows = SpectrogramEngine(SMALL, kernel="compiled").compute(x, 19)
    assert compiled_rows._lib._name == str(kernel)
    assert np.abs(cmake_rows - pip_rows).max() <= KERNEL_TOLERANCE


def test_multi_model_example_runs_three_models_on_one_tile_stream(recording, tmp_path, grc_env):
    from onnx_grid_model import make_grid_model
    from conftest import SMALL
    grid = make_grid_model(tmp_path / "grid.onnx", SMALL, 128)
    proc, out = run_example("multi_model", recording, tmp_path, grc_env, "--concurrency", "parallel",
                            "--models", f"{grid}, energy, energy?name=energy_strong&score=0.9")
    assert proc.returncode == 0, proc.stderr
    recs = [r for r in read_jsonl(out) if r["event"] != "end"]
    for r in recs:
        validate_record(r)
    seen = {m for r in recs for m in r["models"]}
    assert seen == {"grid16", "energy", "energy_strong"}
    # the strict copy of energy keeps a subset of what energy finds
    assert all(r["score"] >= 0.9 for r in recs if r["models"] == ["energy_strong"])
