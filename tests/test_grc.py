"""GRC: every block YAML loads through GRC's own platform; every example compiles with grcc;
the headless example runs to completion and yields detections."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
from gnuradio import gr
from gnuradio.grc.core.platform import Platform

from gnuradio.rfdetect.formats.records import read_jsonl, validate_record

from conftest import ROOT, load_module_from, run_example

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
    assert ids == {f"rfdetect_{b}" for b in ("sigmf_source", "stft_tile", "detector", "iq_detector", "nms_merge",
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


# The live examples cannot run here (no SDR): compile them, import the generated script
# (imports only: nothing opens a device) and check what it would ask of the device and
# of the blocks. Per example: the source's rate setter as grcc writes it, and the rates
# the device delivers without loss. RTL2832U: up to 3.2 MS/s accepted, 2.4 MS/s the
# highest that does not drop samples on most USB hosts. USRP: 10 MS/s, an integer
# decimation of the N2xx (100 MHz) and X3xx (200 MHz) master clocks.
# (device block, its rate setter, the rates it delivers without loss, whether Companions Auto
# runs the companions in real time at the example's rate and centre (wideband-short beside
# wideband at the RTL-SDR's 2.4 MS/s; one network at the USRP's 10 MS/s, above the 6 MS/s they
# kept up with), and tuned to 162 MHz (marine VHF: narrowband's whole row up to 2.8 MS/s since
# session 47, fewer companions up to 6 MS/s since session 48))
LIVE = {
    "live_detect": ("sdr", "set_sample_rate(0, samp_rate)", lambda rate: 0.9e6 <= rate <= 2.4e6, True, True),
    "live_detect_uhd": ("usrp", "set_samp_rate(samp_rate)",
                        lambda rate: rate <= 12e6 and 100e6 % rate == 0 and 200e6 % rate == 0, False, False),
}


@pytest.mark.parametrize("name", sorted(LIVE))
def test_live_example_asks_its_sdr_for_a_rate_it_delivers_with_settings_that_fit(name, tmp_path, grc_env):
    import importlib.util
    import re

    from gnuradio import rfdetect
    from gnuradio.rfdetect.apps.detect_flowgraph import card_spectrogram
    from gnuradio.rfdetect.inference.model_runtime import resolve_auto
    from gnuradio.rfdetect.dsp.spectrogram import SpectrogramParams
    proc = subprocess.run(["grcc", "-o", str(tmp_path), str(ROOT / "examples" / f"{name}.grc")],
                          capture_output=True, text=True, env=grc_env, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    script = tmp_path / f"{name}.py"
    src = script.read_text()
    sdr, rate_setter, supported, with_companions, at_vhf = LIVE[name]
    [rate] = re.findall(r"self\.samp_rate = samp_rate = (\S+)", src)
    rate = float(rate)
    assert supported(rate), f"{name}: {rate / 1e6} MS/s is not a rate the device delivers without loss"
    assert f"self.{sdr}.{rate_setter}" in src  # the device is asked for that rate
    # the STFT Tile's documentation asks for a large buffer on the block before it
    assert f"self.{sdr}.set_min_output_buffer(2097152)" in src
    # the raster view gets the SDR's rows
    assert f"self.connect((self.{sdr}, 0), (self.stft, 0))" in src
    assert re.search(r"rfdetect\.stft_tile\(fft_size=fft_size, hop=hop, .*width=width, .*samp_rate=samp_rate", src)
    assert re.search(r"rfdetect\.iq_detector\(.*mode=\"realtime\", tile_height=tile_height, overlap=overlap", src)
    # a live source: bounded latency (0 would be no deadline; -1 is the block's 2 tile periods)
    [deadline] = re.findall(r"rfdetect\.iq_detector\(.*deadline_s=\(?(-?[0-9.]+)", src)
    assert float(deadline) != 0
    spec = importlib.util.spec_from_file_location(name, script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # imports the device's GNU Radio module (soapy / uhd)
    a = module.argument_parser().parse_args([])
    models = [m.strip() for m in a.models.split(",") if m.strip()]
    assert models
    # the IQ Detector takes the SDR's samples, rate and centre frequency, and runs each model
    # (auto's choice for them) on its own card's spectrogram
    assert f"self.connect((self.{sdr}, 0), (self.det, 0))" in src
    assert re.search(r"rfdetect\.iq_detector\(models=models, samp_rate=samp_rate, center_freq=center_freq", src)
    [freq] = re.findall(r"self\.center_freq = center_freq = (\S+)", src)
    # the IQ Detector as the generated script makes it, with the script's own arguments (the
    # SDR source cannot be made here): it loads every model it runs and checks its settings
    [call] = re.findall(r"(rfdetect\.iq_detector\(.*\))\n", src)
    args = {"models": a.models, "samp_rate": rate, "center_freq": float(freq), "tile_height": a.tile_height,
            "overlap": a.overlap}
    det = eval(call, {"rfdetect": rfdetect}, args)  # noqa: S307 - the script grcc wrote from our example
    # a live capture: auto's companions run where the rate is one they kept up with on 2 cores
    chosen = resolve_auto(models, rate, float(freq), realtime=True)
    assert bool(det.companions) is with_companions
    assert det.models == chosen and (len(chosen) > 1) is with_companions
    vhf = eval(call, {"rfdetect": rfdetect}, {**args, "center_freq": 162e6})  # noqa: S307
    assert bool(vhf.companions) is at_vhf and (len(vhf.models) > 1) is at_vhf
    assert 0 < a.overlap <= a.tile_height // 4
    for m in chosen:
        p = card_spectrogram(m) or SpectrogramParams()
        # a new tile at least every 0.4 s (the networks take 1024 rows: 0.44 s of wideband's
        # grid at an RTL-SDR's 2.4 MS/s); the overlap is a few percent of the tile
        assert (a.tile_height - a.overlap) * p.hop / rate <= 0.4


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
    assert list(prefix.rglob("gnuradio/rfdetect/blocks/stft_tile.py"))
    assert list(prefix.rglob("gnuradio/rfdetect/apps/web/static/training.html"))
    assert list(prefix.rglob("gnuradio/rfdetect/models/default/model.card.json"))
    assert len(list(prefix.rglob("grc/blocks/rfdetect_*.block.yml"))) == len(BLOCK_FILES)
    assert (prefix / "share/gr-rfdetect/examples/file_detect.grc").exists()
    # the compiled spectrogram kernel, built by CMake, loads and gives the rows pip's build gives
    import numpy as np

    from gnuradio.rfdetect.dsp import compiled_rows
    from gnuradio.rfdetect.dsp.spectrogram import KERNEL_TOLERANCE, SpectrogramEngine
    from conftest import SMALL
    kernel, = prefix.rglob("gnuradio/rfdetect/dsp/_stft_rows*.so")
    x = (np.random.default_rng(3).standard_normal(20 * SMALL.hop) * (1 + 1j)).astype(np.complex64)
    pip_rows = SpectrogramEngine(SMALL, kernel="compiled").compute(x, 19)
    load_module_from(monkeypatch, compiled_rows.KERNEL, kernel.parent)
    cmake_rows = SpectrogramEngine(SMALL, kernel="compiled").compute(x, 19)
    assert compiled_rows.KERNEL.module.__file__ == str(kernel)
    assert np.abs(cmake_rows - pip_rows).max() <= KERNEL_TOLERANCE
    # and the pulse contrast kernel, built by CMake, gives the contrast pip's build gives
    from gnuradio.rfdetect.inference import pulse_detector
    pulse_kernel, = prefix.rglob("gnuradio/rfdetect/inference/_pulse_contrast*.so")
    tile = (10 * np.log10(np.random.default_rng(4).exponential(size=(300, 32)))).astype(np.float32)
    tile[100:102, 10:13] += 20.0
    pip_contrast = pulse_detector.load_kernel().contrast(tile, 1024, 6, [2, 5])
    load_module_from(monkeypatch, pulse_detector.KERNEL, pulse_kernel.parent)
    cmake_contrast = pulse_detector.load_kernel().contrast(tile, 1024, 6, [2, 5])
    assert pulse_detector.KERNEL.module.__file__ == str(pulse_kernel)
    assert cmake_contrast[0].max() > 10 and np.array_equal(cmake_contrast[0], pip_contrast[0])
    # and the carrier kernel, built by CMake, gives the maps and regions pip's build gives
    from gnuradio.rfdetect.inference import carrier_detector
    carrier_kernel, = prefix.rglob("gnuradio/rfdetect/inference/_carrier_power*.so")
    tile[50:250, 20] += 15.0
    pip_maps = carrier_detector.KERNEL.load().power(tile, 8)
    pip_regions = carrier_detector.KERNEL.load().regions(pip_maps[1], 2.0, 1, 20)
    load_module_from(monkeypatch, carrier_detector.KERNEL, carrier_kernel.parent)
    cmake_maps = carrier_detector.KERNEL.load().power(tile, 8)
    cmake_regions = carrier_detector.KERNEL.load().regions(pip_maps[1], 2.0, 1, 20)
    assert carrier_detector.KERNEL.module.__file__ == str(carrier_kernel)
    assert cmake_maps[1].max() > 10 and np.array_equal(cmake_maps[1], pip_maps[1])
    assert len(cmake_regions[1]) >= 1 and cmake_regions[1] == pip_regions[1]
    assert np.array_equal(cmake_regions[0], pip_regions[0])


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
    # the strict copy of energy keeps a subset of what energy finds: NMS Merge joins its
    # boxes with energy's identical ones, so each record it is in names energy too (no
    # record names energy_strong alone), with a score of at least its 0.9
    strict = [r for r in recs if "energy_strong" in r["models"]]
    assert strict
    assert all("energy" in r["models"] and r["score"] >= 0.9 for r in strict), strict


def test_two_spectrograms_example_merges_both_branches_into_one_output(recording, tmp_path, grc_env):
    """examples/two_spectrograms.grc: two STFT Tile + Detector branches (here `energy` on a
    1024-point and `energy_fine` on a 512-point spectrogram) into one NMS Merge with
    inputs=2. Both branches reach the output, a signal both saw is one record naming both,
    and every track ends: the run ended once, after both Detectors."""
    subprocess.run(["grcc", "-o", str(tmp_path), str(ROOT / "examples" / "two_spectrograms.grc")], check=True,
                   capture_output=True, env=grc_env, timeout=120)
    out = tmp_path / "two.jsonl"
    proc = subprocess.run([sys.executable, str(tmp_path / "two_spectrograms.py"), "--recording", str(recording),
                           "--out", str(out), "--sigmf-out", str(tmp_path / "two"), "--zmq-address",
                           "tcp://127.0.0.1:0", "--models-wide", "energy", "--fft-size-wide", "1024",
                           "--hop-wide", "512", "--models-narrow", "energy?name=energy_fine", "--fft-size-narrow",
                           "512", "--hop-narrow", "256", "--width", "512", "--tile-height", "128", "--overlap", "16"],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert "did not handle the final tile" not in proc.stderr
    recs = read_jsonl(out)
    for r in recs:
        validate_record(r)
    news = {r["track_id"] for r in recs if r["event"] == "new"}
    assert news and news == {r["track_id"] for r in recs if r["event"] == "end"}
    names = [set(r["models"]) for r in recs if r["event"] != "end"]
    assert set().union(*names) == {"energy", "energy_fine"}
    assert {"energy", "energy_fine"} in names
    assert (tmp_path / "two.sigmf-meta").exists()


def test_vhf_carriers_example_runs_the_carrier_detector_beside_narrowband(tmp_path, grc_env):
    """examples/vhf_carriers.grc: narrowband's branch and the `carrier` detector's (its own STFT
    Tile at fft 4096 / hop 2048 / width 4096, plain dB) into one NMS Merge. On 1 s of NBFM and
    AM voice at 2 MS/s (10-25 dB) the carriers reach the output as tracks of `carrier`'s, and
    every track ends."""
    from gnuradio.rfdetect.apps.synth import synth_dataset
    [rec] = synth_dataset(tmp_path, n=1, seed=4601, sample_rate=2e6, duration=1.0, snr_db=(10.0, 25.0),
                          n_signals=6, profile="vhf-uhf", classes=["nbfm", "am"], center_freq=160e6)
    subprocess.run(["grcc", "-o", str(tmp_path), str(ROOT / "examples" / "vhf_carriers.grc")], check=True,
                   capture_output=True, env=grc_env, timeout=120)
    out = tmp_path / "carriers.jsonl"
    proc = subprocess.run([sys.executable, str(tmp_path / "vhf_carriers.py"), "--recording", str(rec),
                           "--out", str(out), "--sigmf-out", str(tmp_path / "carriers"), "--zmq-address",
                           "tcp://127.0.0.1:0"],
                          capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    recs = read_jsonl(out)
    for r in recs:
        validate_record(r)
    from gnuradio.rfdetect.formats.records import box_iou
    from gnuradio.rfdetect.formats.sigmf_io import SigMFRecording
    from rfdetect_training.evaluate import truth_records
    found = [r for r in recs if r["event"] in ("new", "update") and "carrier" in r["models"]]
    truth = [t for t in truth_records(SigMFRecording.open(rec)) if t["label"] in ("nbfm", "am")]  # not an image
    hits = sum(any(box_iou(t, r) >= 0.5 for r in found) for t in truth)
    assert len(truth) == 6 and hits >= 4, (hits, found)  # measured: all 6 boxed by `carrier`
    news = {r["track_id"] for r in recs if r["event"] == "new"}
    assert news and news == {r["track_id"] for r in recs if r["event"] == "end"}


def test_radar_pulses_example_runs_the_pulse_detector_beside_a_model(tmp_path, grc_env):
    """examples/radar_pulses.grc: a model's branch and the `pulse` detector's (its own STFT
    Tile at fft 32 / hop 16 / width 32, plain dB) into one NMS Merge. On 40 ms of radar pulses
    (20 MS/s, 18-25 dB) the pulses reach the output as tracks, and every track ends."""
    from gnuradio.rfdetect.apps.synth import synth_dataset
    [rec] = synth_dataset(tmp_path, n=1, seed=4482, sample_rate=20e6, duration=0.04, snr_db=(18.0, 25.0),
                          n_signals=2, profile="mixed", classes=["radar"], center_freq=2.8e9)
    subprocess.run(["grcc", "-o", str(tmp_path), str(ROOT / "examples" / "radar_pulses.grc")], check=True,
                   capture_output=True, env=grc_env, timeout=120)
    out = tmp_path / "pulses.jsonl"
    proc = subprocess.run([sys.executable, str(tmp_path / "radar_pulses.py"), "--recording", str(rec),
                           "--out", str(out), "--sigmf-out", str(tmp_path / "pulses"), "--zmq-address",
                           "tcp://127.0.0.1:0", "--models-wide", "energy"],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    recs = read_jsonl(out)
    for r in recs:
        validate_record(r)
    pulses = [r for r in recs if r["event"] != "end" and r["label"] == "pulse"]
    assert len(pulses) >= 20, len(pulses)  # 44 pulses in the recording
    news = {r["track_id"] for r in recs if r["event"] == "new"}
    assert news and news == {r["track_id"] for r in recs if r["event"] == "end"}
