"""The IQ Detector block (STFT Tile -> Detector -> NMS Merge in one block, each model on its
card's spectrogram): what ``auto`` stands for by the capture's rate and centre frequency, and
the same records as ``rfdetect detect``'s flowgraph with the same models, in a real GNU Radio
flowgraph and in the example GRC compiles."""
import subprocess
import sys

import pytest
from gnuradio import blocks, gr

from gnuradio.rfdetect import iq_detector, jsonl_sink, sigmf_source, track_assigner
from gnuradio.rfdetect.blocks.iq_detector import MAX_BRANCH_QUEUE_BYTES
from gnuradio.rfdetect.apps.detect_flowgraph import DetectOptions, card_spectrogram, run_detect
from gnuradio.rfdetect.formats.records import read_jsonl, validate_record
from gnuradio.rfdetect.formats.sigmf_io import SigMFRecording
from gnuradio.rfdetect.inference.model_runtime import ModelError, auto_models, resolve_auto_for_recording
from gnuradio.rfdetect.inference.pulse_detector import PULSE_TILE_ROWS

from conftest import TILE, run_example

# wall-clock fields differ between two runs of one recording
CLOCK = ("utc_start", "utc_stop", "utc_source")


def _comparable(path):
    return [{k: v for k, v in r.items() if k not in CLOCK} for r in read_jsonl(path)]


@pytest.mark.parametrize("rate, freq, expected", [
    (2e6, 450e6, "narrowband"),    # VHF/UHF land-mobile capture
    (20e6, 2.44e9, "wideband"),
    (2e6, 0.0, "wideband"),        # centre frequency unknown
    (8e6, 450e6, "wideband"),      # too wide for narrowband
])
def test_auto_runs_the_model_made_for_the_capture_on_its_cards_spectrogram(rate, freq, expected):
    blk = iq_detector("auto", samp_rate=rate, center_freq=freq, mode="realtime", companions=False)
    assert blk.companions == ()
    assert blk.models == [expected]
    assert [s.params for s in blk.stfts] == [card_spectrogram(expected)]
    assert len(blk.detectors) == 1


@pytest.mark.parametrize("companions, mode", [(True, "realtime"), ("auto", "file"), ("True", "realtime")])
def test_companions_are_the_models_rfdetect_detect_runs_beside_autos_choice(companions, mode):
    blk = iq_detector("auto", samp_rate=20e6, center_freq=2.44e9, companions=companions, mode=mode)
    chosen = auto_models(20e6, 2.44e9)
    assert len(chosen) > 1  # the test means something only where auto has companions here
    assert blk.companions == tuple(chosen[1:])
    assert [str(m).split("?")[0] for m in blk.models] == chosen
    # a branch per spectrogram, each STFT Tile on that spectrogram
    grids = {card_spectrogram(m) for m in chosen}
    assert sorted(map(repr, (s.params for s in blk.stfts))) == sorted(map(repr, grids))


# (rate, centre, the models Companions Auto runs in real time): those that kept up there for 60 s
# on the 2-core Xeon (AUTO_COMPANIONS' last field; docs/performance.md, sessions 46-49), fewer as
# the rate rises: wideband-short first (it added least above 2.8 MS/s), then narrowband-x2, pulse
# and carrier
NB_ROW = ["narrowband", "narrowband-x2", "wideband-short", "pulse", "carrier"]


@pytest.mark.parametrize("rate, freq, expected", [
    (0.8e6, 450e6, ["narrowband", "wideband-short", "carrier"]),
    (2e6, 162e6, NB_ROW), (2.4e6, 162e6, NB_ROW), (2.8e6, 162e6, NB_ROW),
    (3.2e6, 162e6, ["narrowband", "narrowband-x2", "pulse", "carrier"]),
    (3.6e6, 162e6, ["narrowband", "narrowband-x2", "pulse", "carrier"]),
    (4e6, 162e6, ["narrowband", "pulse", "carrier"]), (4.8e6, 162e6, ["narrowband", "pulse", "carrier"]),
    (5.2e6, 162e6, ["narrowband", "carrier"]), (6e6, 162e6, ["narrowband", "carrier"]),
    (6.2e6, 162e6, ["narrowband"]), (6.4e6, 162e6, ["narrowband"]),
    (2.4e6, 915e6, ["wideband", "wideband-short"]), (6e6, 2.44e9, ["wideband", "wideband-short"]),
    (7.68e6, 2.44e9, ["wideband"]), (20e6, 2.44e9, ["wideband"]),
    (2e6, 0.0, ["wideband", "wideband-short"]),
])
def test_companions_auto_in_real_time_runs_those_that_kept_up_at_the_rate(rate, freq, expected):
    """Real-time mode: Companions Auto runs beside auto's choice the companions that kept up
    at the capture's rate on 2 cores, the others not; file mode runs them all."""
    blk = iq_detector("auto", samp_rate=rate, center_freq=freq, mode="realtime")
    assert [str(m).split("?")[0] for m in blk.models] == expected
    assert list(blk.companions) == expected[1:]
    assert auto_models(rate, freq or None, realtime=True) == expected
    whole = auto_models(rate, freq or None)
    assert set(expected) <= set(whole)
    filed = iq_detector("auto", samp_rate=rate, center_freq=freq, mode="file")
    assert [str(m).split("?")[0] for m in filed.models] == whole


def test_real_time_companions_drop_out_one_by_one_as_the_rate_rises():
    """A companion that did not keep up at a rate is not run at a higher one where it would
    run in file mode at both: each real-time set is the file-mode set less those whose limit
    is below the rate."""
    for freq in (162e6, 2.44e9):
        rates = [r * 1e5 for r in range(8, 251)]
        live = [set(auto_models(r, freq, realtime=True)) for r in rates]
        whole = [set(auto_models(r, freq)) for r in rates]
        assert any(a != b for a, b in zip(live, whole))  # the rule leaves some out at these rates
        for i in range(len(rates)):
            for j in range(i + 1, len(rates)):
                assert live[j] & whole[i] <= live[i], (rates[i], rates[j])


def test_companions_auto_says_in_the_log_which_run_and_which_are_left_out():
    out = subprocess.run(
        [sys.executable, "-c", "from gnuradio import rfdetect\n"
         "rfdetect.iq_detector('auto', samp_rate=4e6, center_freq=162e6, mode='realtime')\n"
         "rfdetect.iq_detector('auto', samp_rate=2.4e6, center_freq=162e6, mode='realtime')\n"
         "rfdetect.iq_detector('auto, wideband-short', samp_rate=3e6, center_freq=162e6, mode='realtime')\n"],
        capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    log = out.stdout + out.stderr
    assert ("companions auto in realtime mode: pulse, carrier (left out: narrowband-x2, wideband-short, which "
            "did not keep up at 4 MS/s on 2 cores beside the others)") in log
    assert "companions auto in realtime mode: narrowband-x2, wideband-short, pulse, carrier\n" in log
    # a model the entries name runs, and is neither auto's companion nor left out
    assert "companions auto in realtime mode: narrowband-x2, pulse, carrier\n" in log


def test_real_time_companions_are_those_auto_adds():
    """``companions`` names what auto added beside its choice: not a model the entries name
    themselves (it runs as asked), nor one auto's labels leave nothing to report."""
    named = iq_detector("auto, wideband-short", samp_rate=4e6, center_freq=162e6, mode="realtime")
    assert [str(m).split("?")[0] for m in named.models] == ["narrowband", "pulse", "carrier", "wideband-short"]
    assert named.companions == ("pulse", "carrier")
    tones = iq_detector("auto?labels=tone", samp_rate=4e6, center_freq=162e6, mode="realtime")
    assert [str(m).split("?")[0] for m in tones.models] == ["narrowband", "carrier"]  # pulse reports no tone
    assert tones.companions == ("carrier",)


def test_real_time_limits_without_a_kernel_are_those_measured_without_it(tmp_path, monkeypatch):
    """Where pulse's or carrier's compiled kernel did not build, their NumPy code keeps up with
    less: Companions Auto runs them only to the rates measured that way."""
    from conftest import load_module_from
    from gnuradio.rfdetect.inference import carrier_detector, pulse_detector
    assert auto_models(5.8e6, 162e6, realtime=True) == ["narrowband", "carrier"]
    assert auto_models(3e6, 162e6, realtime=True) == ["narrowband", "narrowband-x2", "pulse", "carrier"]
    load_module_from(monkeypatch, carrier_detector.KERNEL, tmp_path)  # an install without the .so
    assert auto_models(5.8e6, 162e6, realtime=True) == ["narrowband"]
    assert auto_models(5.6e6, 162e6, realtime=True) == ["narrowband", "carrier"]
    load_module_from(monkeypatch, pulse_detector.KERNEL, tmp_path)
    assert auto_models(3e6, 162e6, realtime=True) == ["narrowband", "narrowband-x2", "carrier"]
    assert auto_models(2e6, 162e6, realtime=True) == auto_models(2e6, 162e6)
    assert auto_models(5.8e6, 162e6) == ["narrowband", "narrowband-x2", "wideband-short", "pulse", "carrier"]


@pytest.mark.parametrize("companions, mode", [("auto", "realtime"), (False, "file"), ("no", "file")])
def test_without_companions_auto_is_one_network(companions, mode):
    blk = iq_detector("auto", samp_rate=20e6, center_freq=2.44e9, companions=companions, mode=mode)
    assert blk.companions == ()
    assert blk.models == auto_models(20e6, 2.44e9)[:1]
    assert len(blk.stfts) == len(blk.detectors) == 1


def test_companions_that_are_not_a_choice_are_one_error_naming_them():
    with pytest.raises(ValueError, match="companions must be 'auto', True or False, not 'sometimes'"):
        iq_detector("auto", samp_rate=20e6, center_freq=2.44e9, companions="sometimes")


def test_auto_without_a_centre_frequency_warns_where_narrowband_could_be_meant():
    code = ("from gnuradio import rfdetect\n"
            "b = rfdetect.iq_detector('auto', samp_rate={rate}, center_freq={freq})\n"
            "print('models', b.models)")
    for rate, freq, warned in ((2e6, 0, True), (2e6, 450e6, False), (20e6, 0, False)):
        proc = subprocess.run([sys.executable, "-c", code.format(rate=rate, freq=freq)], capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        said = proc.stdout + proc.stderr
        assert "models [" in said
        assert ("Center frequency is 0" in said) == warned, (rate, freq, said[-1000:])


def test_one_entry_as_a_dict_or_model_spec_is_taken_as_the_detector_takes_it():
    from gnuradio.rfdetect.inference.model_runtime import ModelSpec
    for models in ({"model": "energy", "score_threshold": 0.9}, ModelSpec("energy", score_threshold=0.9),
                   [ModelSpec("energy", score_threshold=0.9), "pulse"]):
        blk = iq_detector(models, samp_rate=2e6, **TILE)
        assert blk.models[0] == {"model": "energy", "score_threshold": 0.9}
        assert [d.model_specs[0].score_threshold for d in blk.detectors][:1] == [0.9]


def test_auto_without_a_sample_rate_is_one_error_naming_it():
    with pytest.raises(ModelError, match="samp_rate"):
        iq_detector("auto", samp_rate=0, **TILE)


def test_a_model_that_does_not_exist_is_refused_when_the_block_is_made(tmp_path):
    with pytest.raises(ModelError, match="no_such_model"):
        iq_detector(str(tmp_path / "no_such_model"), samp_rate=2e6, **TILE)
    with pytest.raises(ValueError, match="at least one model"):
        iq_detector(" , ", samp_rate=2e6, **TILE)


def _flowgraph_records(recording, models, out, tile):
    rec = SigMFRecording.open(recording)
    tb = gr.top_block()
    blk = iq_detector(models, samp_rate=rec.sample_rate, center_freq=rec.center_frequency, **tile)
    # the Python blocks must outlive the run: the scheduler calls into them
    source, tracks, sink = sigmf_source(str(recording)), track_assigner(), jsonl_sink(str(out))
    stats = blocks.message_debug()
    tb.connect(source, blk)
    tb.msg_connect(blk, "detections", tracks, "in")
    tb.msg_connect(tracks, "out", sink, "in")
    tb.msg_connect(blk, "stats", stats, "store")
    tb.run()
    assert blk.error is None
    # every Detector's statistics leave by the block's one stats port (at least the final ones)
    assert stats.num_messages() >= len(blk.detectors) == len(blk.stats())
    return blk, _comparable(out)


def test_the_pulse_branch_runs_on_tiles_of_its_own_height():
    """pulse's rows are 16 samples: at the networks' 1024-row tiles a 2.4 MS/s capture makes
    167 of its tiles a second, so its branch runs on PULSE_TILE_ROWS (a taller tile height
    given stays); every other branch on the tile height given."""
    blk = iq_detector("narrowband, pulse, carrier", samp_rate=2.4e6, center_freq=162e6, tile_height=1024,
                      overlap=128)
    heights = {d.model_specs[0].model: d.engine.tile_height for d in blk.detectors}
    assert heights == {"narrowband": 1024, "pulse": PULSE_TILE_ROWS, "carrier": 1024}
    blk = iq_detector("energy, pulse", samp_rate=2.4e6, tile_height=2 * PULSE_TILE_ROWS, overlap=128)
    assert [d.engine.tile_height for d in blk.detectors] == [2 * PULSE_TILE_ROWS] * 2


def test_real_time_branches_hold_and_wait_for_tiles_as_long_as_the_longest_tiles_span():
    """Real-time mode: a branch's queue and automatic deadline span as much of the capture as
    the longest tiles (carrier's 2 M samples here), which the NMS Merge waits for anyway: with 4
    tiles and 2 periods of its own, pulse's 65,536-sample tiles were dropped by a few hundred ms
    of another branch's work while the capture was kept up with. File mode: as given."""
    models, rate = "narrowband, pulse, carrier", 2e6
    blk = iq_detector(models, samp_rate=rate, center_freq=162e6, mode="realtime", queue_size=4)
    spans = {"narrowband": 1024 * 1024, "pulse": PULSE_TILE_ROWS * 16, "carrier": 1024 * 2048}
    longest = max(spans.values())
    for d in blk.detectors:
        assert d.engine.deadline_s == pytest.approx(2 * longest / rate)
    assert {d.model_specs[0].model: d.engine._queue.size for d in blk.detectors} == \
        {"narrowband": 8, "pulse": 128, "carrier": 4}
    assert 128 * PULSE_TILE_ROWS * 32 * 4 <= MAX_BRANCH_QUEUE_BYTES  # pulse's whole span fits
    blk = iq_detector(models, samp_rate=rate, center_freq=162e6, mode="file", queue_size=4)
    assert [d.engine._queue.size for d in blk.detectors] == [4, 4, 4]
    # a longer queue than the bytes allow is never cut: the user's queue_size stays
    blk = iq_detector(models, samp_rate=rate, center_freq=162e6, mode="realtime", queue_size=200)
    assert {d.model_specs[0].model: d.engine._queue.size for d in blk.detectors} == \
        {"narrowband": 200, "pulse": 200, "carrier": 200}


# the embedded networks take 1024-row tiles; the model-free detectors the tests' small ones
EMBEDDED_TILE = dict(tile_height=1024, overlap=128)


@pytest.mark.parametrize("models, tile", [("auto", EMBEDDED_TILE), ("energy, pulse", TILE)],
                         ids=["auto", "two-spectrograms"])
def test_records_are_rfdetect_detects_with_the_same_models(recording, tmp_path, models, tile):
    blk, got = _flowgraph_records(recording, models, tmp_path / "block.jsonl", tile)
    if models == "energy, pulse":
        assert len(blk.detectors) == 2  # pulse runs on a grid of its own
    else:
        # file mode: Companions auto runs what rfdetect detect runs beside auto's network
        assert len(blk.models) > 1
    # auto resolved as rfdetect detect resolves it, from the recording's metadata
    cli_models, _ = resolve_auto_for_recording([m.strip() for m in models.split(",")], str(recording))
    assert [str(m) for m in cli_models] == [str(m) for m in blk.models]
    opt = DetectOptions(models=cli_models, by_card=True, out=str(tmp_path / "cli.jsonl"), **tile)
    run_detect(str(recording), opt, handle_signals=False)
    want = _comparable(tmp_path / "cli.jsonl")
    assert sum(r["event"] == "new" for r in want) >= 3
    assert got == want


def test_auto_detect_example_compiles_and_runs_the_model_made_for_the_recording(recording, tmp_path, grc_env):
    proc, out = run_example("auto_detect", recording, tmp_path, grc_env, small=False, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = SigMFRecording.open(recording)
    # file mode: Companions auto runs them, as rfdetect detect does
    chosen = auto_models(rec.sample_rate, rec.center_frequency)
    assert len(chosen) > 1  # the test means something only where auto has companions here
    records = read_jsonl(out)
    for r in records:
        validate_record(r)
    new = [r for r in records if r["event"] == "new"]
    assert len(new) >= 3
    found = {m.split("-", 1)[-1] for r in new for m in r["models"]}
    assert chosen[0] in found and found <= set(chosen), (chosen, found)
    # the example's records are the block's own with the models auto chose
    _, direct = _flowgraph_records(recording, ",".join(chosen), tmp_path / "direct.jsonl", EMBEDDED_TILE)
    assert _comparable(out) == direct
    assert (tmp_path / "auto_detect.sigmf-meta").exists()
