"""bench/visibility.py: how much of a labelled signal a model's spectrogram shows. It pins
the fact docs/training.md builds on: a radar pulse of a few microseconds is not in
`narrowband`'s picture at all (fft 2048 at 2 MS/s: a 1 ms window), while a TDMA burst is."""
import importlib.util
from pathlib import Path

import numpy as np

from gnuradio.rfdetect.apps.synth import synth_dataset

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _visibility():
    spec = importlib.util.spec_from_file_location("visibility", BENCH / "visibility.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_radar_pulses_show_no_contrast_where_tdma_bursts_do(tmp_path):
    vis = _visibility()
    # seed 4473: 10 radar pulses and 11 TDMA bursts with rows of noise around them, 15-25 dB
    [meta] = synth_dataset(tmp_path, n=1, seed=4473, sample_rate=2e6, duration=0.4, snr_db=(15.0, 25.0),
                           n_signals=4, profile="vhf-uhf", classes=["tdma", "radar"], center_freq=450e6)
    p = vis.model_spectrogram("narrowband")
    assert (p.fft_size, p.hop) == (2048, 1024)
    boxes = vis.box_contrasts(meta, p, None)
    radar = [c for lab, snr, c in boxes if lab == "radar"]
    tdma = [c for lab, snr, c in boxes if lab == "tdma"]
    assert len(radar) >= 5 and len(tdma) >= 5, (len(radar), len(tdma))
    assert abs(np.median(radar)) < 1.0, radar  # measured 0.3 dB
    assert np.median(tdma) > 6.0, tdma  # measured 14.1 dB
    # --label keeps one family
    assert {lab for lab, _, _ in vis.box_contrasts(meta, p, ["radar"])} == {"radar"}
