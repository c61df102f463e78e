"""Shared fixtures: small spectrogram settings and small synthetic recordings.

Tests use fft 1024 / hop 512 / width 512 / tiles of 128 rows at 2 MS/s so that a
0.3 s recording spans about ten tiles and runs in a second; the full-size path
(4096/2048/1024, 1024-row tiles) runs in `make demo` and bench/.
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gnuradio.rfdetect.dsp.spectrogram import SpectrogramParams
from gnuradio.rfdetect.apps.synth import synth_dataset

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SMALL = SpectrogramParams(fft_size=1024, hop=512, width=512)
TILE = dict(tile_height=128, overlap=16)
SMALL_ARGS = ["--fft-size", "1024", "--hop", "512", "--width", "512", "--tile-height", "128", "--overlap", "16"]
RATE = 2e6


def run_cli(*args, check=True, timeout=120, prog="rfdetect", **kw):
    """Run an installed console command (``rfdetect`` unless ``prog`` says otherwise)."""
    proc = subprocess.run([str(BIN / prog), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{prog} {args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def load_module_from(monkeypatch, kernel, folder) -> None:
    """Point a CompiledModule (``kernel``) at ``folder`` for this test: its next load looks
    there, as on an install whose module is that folder's (or has none: an empty folder)."""
    monkeypatch.setattr(kernel, "folder", str(folder))
    monkeypatch.setattr(kernel, "module", None)
    monkeypatch.setattr(kernel, "error", None)


def longest_wait_during(call):
    """(the longest gap between the ticks of a Python thread ticking every millisecond while
    ``call()`` runs in this one, the call's length), in seconds: a call that releases the GIL
    leaves the ticks going (gaps of a few ms); one that holds it, one gap as long as itself."""
    import threading
    import time
    ticks, stop = [], threading.Event()

    def ticker():
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.001)

    th = threading.Thread(target=ticker)
    th.start()
    time.sleep(0.05)
    t0 = time.perf_counter()
    call()
    t1 = time.perf_counter()
    stop.set()
    th.join()
    during = [t0] + [t for t in ticks if t0 < t < t1] + [t1]
    return float(max(np.diff(during))), t1 - t0


def run_example(name, recording, tmp_path, grc_env, *args, small=True, timeout=120):
    """Compile examples/NAME.grc with grcc and run it headless on ``recording`` (``small``: at
    the tests' small spectrogram settings); -> (process, JSONL output path)."""
    subprocess.run(["grcc", "-o", str(tmp_path), str(ROOT / "examples" / f"{name}.grc")], check=True,
                   capture_output=True, env=grc_env, timeout=120)
    out = tmp_path / f"{name}.jsonl"
    proc = subprocess.run([sys.executable, str(tmp_path / f"{name}.py"), "--recording", str(recording),
                           "--out", str(out), "--sigmf-out", str(tmp_path / name), "--zmq-address",
                           "tcp://127.0.0.1:0", *(SMALL_ARGS if small else []), *args],
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    return proc, out


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("synth")
    synth_dataset(d, n=2, seed=11, sample_rate=RATE, duration=0.3, snr_db=(10.0, 25.0), n_signals=8)
    return d


@pytest.fixture(scope="session")
def recording(synth_dir):
    return sorted(synth_dir.glob("*.sigmf-meta"))[0]


@pytest.fixture(scope="session")
def noise_recording(tmp_path_factory):
    d = tmp_path_factory.mktemp("noise")
    synth_dataset(d, n=1, seed=5, sample_rate=RATE, duration=0.6, n_signals=0)
    return sorted(d.glob("*.sigmf-meta"))[0]


@pytest.fixture
def grc_env():
    env = dict(os.environ)
    env["GRC_BLOCKS_PATH"] = str(ROOT / "grc")
    return env


def rng():
    return np.random.default_rng(1234)
