"""training/: prepare, auto-tune, train, evaluate, export, and the exported models in
the Detector. Small tiles (128 x 512), tiny networks, a few seconds of CPU each."""
import json
import os
import subprocess

import numpy as np
import pytest

from conftest import BIN, RATE, SMALL, SMALL_ARGS, TILE, run_cli
from gnuradio.rfdetect.formats.records import match_boxes, read_jsonl, from_annotation
from gnuradio.rfdetect.formats.sigmf_io import SigMFRecording
from gnuradio.rfdetect.apps.synth import synth_dataset
from gnuradio.rfdetect.formats.tile_io import read_tile_png

torch = pytest.importorskip("torch")

from rfdetect_training.autotune import auto_tune  # noqa: E402
from rfdetect_training.prepare import DataError, PrepareOptions, prepare  # noqa: E402



def train_cli(*args, check=True, timeout=600):
    return run_cli(*args, check=check, timeout=timeout, prog="rfdetect-train")


@pytest.fixture(scope="module")
def train_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("train_data")
    synth_dataset(d, n=10, seed=3, sample_rate=RATE, duration=0.3, snr_db=(12.0, 25.0), n_signals=10)
    return d


@pytest.fixture(scope="module")
def tiles(train_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("prep") / "tiles"
    prepare(train_data, out, PrepareOptions(SMALL, TILE["tile_height"], TILE["overlap"]), progress=False)
    return out


@pytest.fixture(scope="module")
def two_stage_model(train_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("model2s") / "model"
    train_cli("run", "--data", train_data, "--out", out, *SMALL_ARGS, "--arch", "two_stage", "--epochs", "40",
              "--lr", "2e-3", "--k-folds", "0", "--early-stop", "8", "--quiet")
    return out


# ---------------------------------------------------------------- auto-tune
@pytest.mark.parametrize("n,row", [
    (0, (100, 0, 4, 1e-4, 5)), (49, (100, 0, 4, 1e-4, 5)),
    (50, (75, 3, 4, 1e-4, 5)), (99, (75, 3, 4, 1e-4, 5)),
    (100, (75, 5, 8, 3e-4, 7)), (199, (75, 5, 8, 3e-4, 7)),
    (200, (50, 5, 8, 3e-4, 10)), (499, (50, 5, 8, 3e-4, 10)),
    (500, (30, 7, 16, 3e-4, 12)), (1999, (30, 7, 16, 3e-4, 12)),
    (2000, (20, 10, 16, 3e-4, 15)), (10 ** 6, (20, 10, 16, 3e-4, 15)),
])
def test_auto_tune_reproduces_the_table(n, row):
    r = auto_tune(n)
    assert (r.epochs, r.k_folds, r.batch_size, r.lr, r.early_stop) == row
    assert r.estimated_s >= 0


def test_auto_tune_overrides_and_cli_table(tiles):
    r = auto_tune(120, overrides={"epochs": 3, "lr": 0.01, "k_folds": None})
    assert (r.epochs, r.lr, r.k_folds) == (3, 0.01, 5)
    out = train_cli("autotune", "--tiles", tiles, "--batch-size", "2").stdout
    assert "Batch size      2" in out and "Epochs" in out and "Estimated time" in out


# ---------------------------------------------------------------- prepare
def test_prepare_writes_tiles_boxes_and_coco(tiles, train_data):
    ds = json.loads((tiles / "dataset.json").read_text())
    assert ds["labels"] == sorted({a["core:label"] for p in train_data.glob("*.sigmf-meta")
                                   for a in SigMFRecording.open(p).annotations})
    assert ds["tiles"] == len(list((tiles / "tiles").glob("*.png"))) and ds["boxes"] > 20
    e = json.loads((tiles / "tiles" / ds["images"][0].replace(".png", ".json")).read_text())
    assert e["image"] == ds["images"][0] and (e["width"], e["height"]) == (512, 128)
    for b in e["bboxes"]:
        assert 0 <= b["x_min"] < b["x_max"] <= 512 and 0 <= b["y_min"] < b["y_max"] <= 128
        assert b["x_max"] - b["x_min"] >= 2 and b["y_max"] - b["y_min"] >= 2
    coco = json.loads((tiles / "coco.json").read_text())
    assert len(coco["images"]) == ds["tiles"] and len(coco["annotations"]) == ds["boxes"]
    assert {c["name"] for c in coco["categories"]} == set(ds["labels"])


def test_prepare_with_several_processes_writes_the_same_files(tiles, train_data, tmp_path):
    out = tmp_path / "tiles"
    r = train_cli("prepare", "--data", train_data, "--out", out, "--jobs", "2", "--quiet", *SMALL_ARGS)
    assert "prepare: " in r.stdout and not out.with_name("tiles.partial").exists()
    files = sorted(p.relative_to(tiles) for p in tiles.rglob("*") if p.is_file())
    assert len(files) > 20 and files == sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    for f in files:
        assert (tiles / f).read_bytes() == (out / f).read_bytes(), f
    bad = train_cli("prepare", "--data", train_data, "--out", tmp_path / "x", "--jobs", "-1", check=False)
    assert bad.returncode == 2 and "--jobs: '-1': give a number of processes >= 0" in bad.stderr
    assert not (tmp_path / "x").exists()


def test_prepare_with_labels_boxes_only_those(tiles, train_data, tmp_path):
    out = tmp_path / "tiles"
    train_cli("prepare", "--data", train_data, "--out", out, "--labels", "fhss,tone", "--quiet", *SMALL_ARGS)
    ds = json.loads((out / "dataset.json").read_text())
    full = json.loads((tiles / "dataset.json").read_text())
    assert ds["labels"] == ["fhss", "tone"] and ds["label_filter"] == ["fhss", "tone"]
    seen = [b["label"] for im in ds["images"]
            for b in json.loads((out / "tiles" / im.replace(".png", ".json")).read_text())["bboxes"]]
    assert len(seen) == ds["boxes"] and set(seen) == {"fhss", "tone"}
    assert 0 < ds["boxes"] < full["boxes"] and set(full["labels"]) - {"fhss", "tone"}
    # a label no recording has is refused before any tile is written, naming the labels there are
    bad = train_cli("prepare", "--data", train_data, "--out", tmp_path / "x", "--labels", "fhss,blutooth",
                    "--quiet", *SMALL_ARGS, check=False)
    assert bad.returncode == 2 and "--labels: blutooth is in no recording" in bad.stderr, bad.stderr
    assert "fhss" in bad.stderr.split("its labels:")[1]
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.partial").exists()


def test_evaluate_with_labels_scores_only_those_truth_boxes(train_data, tmp_path):
    tones = sum(a["core:label"] == "tone" for p in train_data.glob("*.sigmf-meta")
                for a in SigMFRecording.open(p).annotations)
    reports = {}
    for name, extra in (("all", ()), ("tone", ("--labels", "tone"))):
        train_cli("evaluate", "--model", "energy", "--recordings", train_data, "--out", tmp_path / name,
                  "--truth", "exact", "--quiet", *SMALL_ARGS, *extra)
        reports[name] = json.loads((tmp_path / name / "report.json").read_text())["physical"]["class_agnostic"]
    assert 0 < tones < reports["all"]["truth"]
    assert reports["tone"]["truth"] == tones


def test_prepared_tile_equals_the_detector_blocks_tile(tiles, train_data, tmp_path):
    """The tiles the Detector block sees in a real flowgraph (--save-tiles) are the
    prepared tiles, file for file."""
    rec = sorted(train_data.glob("*.sigmf-meta"))[0]
    seen = tmp_path / "seen"
    run_cli("detect", rec, "--model", "energy", "--out", tmp_path / "d.jsonl", "--save-tiles", seen,
            *SMALL_ARGS, "--quiet")
    stem = rec.name.removesuffix(".sigmf-meta")
    prepared = sorted((tiles / "tiles").glob(f"{stem}_*.png"))
    block = sorted(seen.glob("tile_*.png"))
    assert len(prepared) == len(block) >= 5
    for a, b in zip(prepared, block):
        ta, tb = read_tile_png(a), read_tile_png(b)
        assert ta.shape == tb.shape == (128, 512)
        # FFTW may differ in the last float bit with a frame's batch position: at most one PNG step
        assert np.abs(ta - tb).max() <= 1.01 / 65535, a.name
        assert np.mean(ta == tb) > 0.99, a.name  # the rest round the same way


def test_prepare_clips_boxes_at_tile_edges_and_drops_slivers():
    from rfdetect_training.prepare import pixel_boxes
    p = SMALL
    fs, fc = RATE, 0.0
    box = {"label": "x", "s0": int(p.row_to_sample(100)), "s1": int(p.row_to_sample(140)), "f0": -2e5, "f1": 2e5}
    [b] = pixel_boxes([box], p, row_start=0, valid_rows=128, sample_rate=fs, center_freq=fc)
    assert b["y_max"] == 128 and abs(b["y_min"] - 100) < 0.01
    assert pixel_boxes([box], p, row_start=0, valid_rows=101, sample_rate=fs, center_freq=fc) == []  # 1-row sliver
    [c] = pixel_boxes([box], p, row_start=112, valid_rows=128, sample_rate=fs, center_freq=fc)
    assert c["y_min"] == 0 and abs(c["y_max"] - 28) < 0.01


def test_signals_smaller_than_the_spectrogram_shows_are_boxed_at_its_resolution():
    """A pulse shorter than two rows or a tone narrower than two columns is boxed at that
    size about its centre (it used to be dropped, so training taught it as background);
    such boxes of one label that then overlap are one box (pulses 1.5 rows apart), boxes
    2-3 rows apart stay apart, and boxes of the signal's own size are never touched."""
    from rfdetect_training.prepare import pixel_boxes, resolution, resolvable_boxes
    p = SMALL
    hop = p.hop
    min_len, min_hz = resolution(p, RATE)
    assert min_len == 2 * hop and min_hz == 2 * RATE / p.width
    pulse = lambda s, lab="radar": {"label": lab, "s0": s, "s1": s + 10, "f0": -1e5, "f1": 1e5}  # noqa: E731
    train = [pulse(10 * hop + int(1.5 * hop * i)) for i in range(5)]  # 1.5 rows apart: one smear
    apart = [pulse(40 * hop), pulse(40 * hop + 3 * hop)]  # 3 rows apart: two boxes
    tone = {"label": "tone", "s0": 60 * hop, "s1": 90 * hop, "f0": 5e5, "f1": 5e5 + 1.0}
    burst = {"label": "radar", "s0": 10 * hop, "s1": 30 * hop, "f0": -1e5, "f1": 1e5}  # not grown, not merged
    early = pulse(3)
    other = pulse(10 * hop, lab="drone")  # another label over the train: kept apart
    out = resolvable_boxes(train + apart + [tone, burst, early, other], min_len, min_hz)
    assert len(out) == 1 + 2 + 1 + 1 + 1 + 1
    assert out[0] == burst
    radar = sorted((b for b in out if b["label"] == "radar" and b is not out[0]), key=lambda b: b["s0"])
    first, last = train[0], train[-1]
    assert radar[0]["s0"] == 0 and radar[0]["s1"] == min_len  # moved to start at 0, not before it
    assert radar[1]["s0"] == pytest.approx((first["s0"] + 5) - hop)
    assert radar[1]["s1"] == pytest.approx((last["s0"] + 5) + hop)
    assert [b["s1"] - b["s0"] for b in radar[2:]] == [min_len, min_len]
    [t] = [b for b in out if b["label"] == "tone"]
    assert t["f1"] - t["f0"] == pytest.approx(min_hz) and (t["s0"], t["s1"]) == (tone["s0"], tone["s1"])
    assert [b["s0"] for b in out if b["label"] == "drone"] == [pytest.approx(10 * hop + 5 - hop)]
    # found boxes (scored): "signal" names no class, so it is one smear with a named box; two
    # names stay two boxes, as truth boxes of two labels do
    found = lambda s, lab, score: {**pulse(s, lab), "score": score}  # noqa: E731
    got = resolvable_boxes([found(10 * hop, "radar", 0.4), found(10 * hop + 5, "signal", 0.7),
                            found(40 * hop, "radar", 0.4), found(40 * hop + 5, "bt", 0.7)], min_len, min_hz)
    assert sorted((b["label"], b["score"]) for b in got) == [("bt", 0.7), ("radar", 0.4), ("radar", 0.7)]
    assert resolvable_boxes([pulse(10 * hop), pulse(10 * hop + 5, "signal")], min_len, min_hz)[0]["label"] == "radar"
    assert len(resolvable_boxes([pulse(10 * hop), pulse(10 * hop + 5, "signal")], min_len, min_hz)) == 2
    # and prepare's pixel boxes keep them: two rows, two columns
    px = pixel_boxes(out, p, row_start=0, valid_rows=128, sample_rate=RATE, center_freq=0.0)
    assert len(px) == len(out)
    assert pixel_boxes([train[0]], p, row_start=0, valid_rows=128, sample_rate=RATE, center_freq=0.0) == []


def test_evaluate_scores_against_the_resolvable_or_the_exact_truth(train_data, tmp_path):
    """rfdetect-train evaluate --model: by default the truth as the spectrogram shows it
    (the five pulses 1.5 rows apart count as one box, a 1 Hz tone as two columns), with
    --truth exact the annotations as written; the report says which."""
    from rfdetect_training.evaluate import truth_records
    src = sorted(train_data.glob("*.sigmf-meta"))[0]
    d = tmp_path / "recs"
    d.mkdir()
    meta = json.loads(src.read_text())
    n_ann = len(meta["annotations"])
    fc = meta["captures"][0]["core:frequency"]
    hop = SMALL.hop
    meta["annotations"] += [{"core:sample_start": 20 * hop + int(1.5 * hop * i), "core:sample_count": 10,
                             "core:freq_lower_edge": fc - 1e5, "core:freq_upper_edge": fc + 1e5,
                             "core:label": "radar"} for i in range(5)]
    meta["annotations"].append({"core:sample_start": 80 * hop, "core:sample_count": 40 * hop,
                                "core:freq_lower_edge": fc + 5e5, "core:freq_upper_edge": fc + 5e5 + 1,
                                "core:label": "cw"})
    (d / "r.sigmf-meta").write_text(json.dumps(meta))
    os.link(str(src).removesuffix(".sigmf-meta") + ".sigmf-data", d / "r.sigmf-data")
    rec = SigMFRecording.open(d / "r.sigmf-meta")
    exact, seen = truth_records(rec), truth_records(rec, params=SMALL)
    assert len(exact) == n_ann + 6
    assert len(seen) == len(exact) - 4
    [t] = [b for b in seen if b["label"] == "cw"]
    assert (t["f_high"] - t["f_low"]) == pytest.approx(2 * RATE / SMALL.width)
    counts = {}
    for rule in ("resolvable", "exact"):
        out = tmp_path / rule
        args = ["evaluate", "--model", "energy", "--recordings", d, "--out", out, *SMALL_ARGS, "--quiet"]
        train_cli(*args, *(["--truth", "exact"] if rule == "exact" else []))
        r = json.loads((out / "report.json").read_text())["physical"]
        assert r["truth"] == rule
        counts[rule] = r["class_agnostic"]["truth"]
        by_label = r["recall_by_label"]
        assert sum(v["truth"] for v in by_label.values()) == counts[rule] and by_label["cw"]["truth"] == 1
        assert "| truth label | recall (any label) | signals |" in (out / "report.md").read_text()
    assert counts == {"resolvable": len(seen), "exact": len(exact)}
    bad = train_cli("evaluate", "--model", "energy", "--recordings", d, "--out", tmp_path / "x", "--truth", "loose",
                    check=False)
    assert bad.returncode != 0 and "--truth" in bad.stderr and not (tmp_path / "x").exists()


# ---------------------------------------------------------------- bad data
def test_bad_data_is_refused_or_skipped_with_reasons(tmp_path, train_data):
    empty = tmp_path / "unlabelled"
    synth_dataset(empty, n=1, seed=1, sample_rate=RATE, duration=0.1, n_signals=0)
    with pytest.raises(DataError, match="no labelled annotations"):
        prepare(empty, tmp_path / "t0", PrepareOptions(SMALL, 128, 16), progress=False)
    assert not (tmp_path / "t0").exists() and not (tmp_path / "t0.partial").exists()
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    good = sorted(train_data.glob("*.sigmf-meta"))[0]
    for suffix in (".sigmf-meta", ".sigmf-data"):
        os.link(str(good).removesuffix(".sigmf-meta") + suffix, mixed / ("good" + suffix))
    (mixed / "junk.sigmf-meta").write_text("{not json")
    (mixed / "junk.sigmf-data").write_bytes(os.urandom(1000))
    meta = json.loads(good.read_text())
    meta["annotations"][0].pop("core:label")
    (mixed / "nolabel.sigmf-meta").write_text(json.dumps(meta))
    os.link(str(good).removesuffix(".sigmf-meta") + ".sigmf-data", mixed / "nolabel.sigmf-data")
    s = prepare(mixed, tmp_path / "t1", PrepareOptions(SMALL, 128, 16), progress=False)
    assert s["recordings"] == 2
    assert any("junk" in x and "unreadable" in x for x in s["skipped"])
    assert any("nolabel" in x and "no core:label" in x for x in s["skipped"])
    # empty tiles are kept (they teach the models background): this recording has some
    # (measured: 22 tiles from the two readable copies, 15 of them with boxes)
    assert s["tiles"] > s["tiles_with_boxes"] > 0
    # a corrupt tile PNG: one clear error at training time, not a crash mid-epoch
    png = sorted((tmp_path / "t1" / "tiles").glob("*.png"))[0]
    png.write_bytes(b"\x89PNG garbage")
    proc = train_cli("train", "--tiles", tmp_path / "t1", "--out", tmp_path / "r", "--epochs", "1", "--quiet",
                     check=False)
    assert proc.returncode == 2 and png.name in proc.stderr and "Traceback" not in proc.stderr


def test_data_folders_reached_through_links_are_read_once(tmp_path, train_data):
    """A corpus assembled from linked folders is read whole (Path.rglob skips linked folders:
    session 25 lost 80 of 280 recordings that way); a link loop and a second link to one
    folder add nothing."""
    from rfdetect_training.prepare import find_recordings
    corpus = tmp_path / "corpus"
    (corpus / "own").mkdir(parents=True)
    good = sorted(train_data.glob("*.sigmf-meta"))[:2]
    for suffix in (".sigmf-meta", ".sigmf-data"):
        os.link(str(good[0]).removesuffix(".sigmf-meta") + suffix, corpus / "own" / ("a" + suffix))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for suffix in (".sigmf-meta", ".sigmf-data"):
        os.link(str(good[1]).removesuffix(".sigmf-meta") + suffix, elsewhere / ("b" + suffix))
    (corpus / "linked").symlink_to(elsewhere, target_is_directory=True)
    (corpus / "linked_again").symlink_to(elsewhere, target_is_directory=True)
    (elsewhere / "loop").symlink_to(corpus, target_is_directory=True)
    found = find_recordings(corpus)
    assert sorted(p.name for p in found) == ["a.sigmf-meta", "b.sigmf-meta"]
    s = prepare(corpus, tmp_path / "t", PrepareOptions(SMALL, 128, 16), progress=False)
    assert s["recordings"] == 2


# ---------------------------------------------------------------- train -> export -> detect
def test_two_stage_run_exports_a_model_that_detect_uses_with_the_right_labels(two_stage_model, tmp_path):
    card = json.loads((two_stage_model / "model.card.json").read_text())
    assert card["output"]["format"] == "crop_classifier/1"
    assert card["spectrogram"] == SMALL.to_dict() and card["metrics"]["pixel"]["AP50"] > 0.5
    assert card["onnx_check"]["max_excess_error"] <= 1e-4
    assert torch.load(two_stage_model / "work" / "runs" / "final" / "best.pt",
                      weights_only=False)["config"]["ema"] == 0.0  # no weight average but for anchor_free
    report = json.loads((two_stage_model / "work" / "report" / "report.json").read_text())
    assert "physical" in report and report["physical"]["recordings"] >= 1
    assert (two_stage_model / "work" / "runs" / "final" / "metrics.csv").is_file()
    assert (two_stage_model / "work" / "runs" / "final" / "loss.png").is_file()
    # an unseen recording
    synth_dataset(tmp_path, n=1, seed=77, sample_rate=RATE, duration=0.3, snr_db=(12.0, 25.0), n_signals=10)
    rec = sorted(tmp_path.glob("*.sigmf-meta"))[0]
    out = tmp_path / "d.jsonl"
    # Brief training leaves scores low: a score floor of 0.3 instead of the card's 0.5 (a
    # per-model option). Re-measured 2026-11-22 (the fixture's training, card AP50 0.70, then
    # this recipe on seeds 77-79): every signal found; 50 %, 80 %, 60 % labelled right (seed
    # 77: 3 of 6). An earlier comment here said 80-100 %; that no longer holds.
    run_cli("detect", rec, "--model", f"{two_stage_model / 'model.onnx'}?score=0.3", "--out", out, *SMALL_ARGS,
            "--quiet")
    found = [r for r in read_jsonl(out) if r["event"] == "new"]
    r = SigMFRecording.open(rec)
    truth = [from_annotation(a, r.sample_rate) for a in r.annotations]
    labelled = [t for t in truth if t["label"] != "fhss"]  # hops are separate annotations; tracks join them
    # IoU 0.3: a chirp's box is loose around its diagonal (chance of the right label: 20 %)
    found_any, _ = match_boxes(labelled, found, iou=0.3, class_aware=False)
    right, _ = match_boxes(labelled, found, iou=0.3, class_aware=True)
    pairs = [(t["label"], None if j is None else found[j]["label"]) for t, j in zip(labelled, found_any)]
    # the floors are that measurement for this seed (from one training run: where another
    # machine's training lands lower, re-measure and say so here)
    assert all(j is not None for j in found_any), pairs
    assert sum(j is not None for j in right) / len(labelled) >= 0.5, pairs
    assert {f["label"] for f in found} <= set(card["labels"])
    _same_on_onnx_runtime_and_pytorch(two_stage_model, sorted((two_stage_model / "work" / "tiles" / "tiles")
                                                              .glob("*.png")), ["probs"])


def test_detector_refuses_a_model_trained_for_other_spectrogram_settings(two_stage_model, recording, tmp_path):
    proc = run_cli("detect", recording, "--model", two_stage_model / "model.onnx", "--out", tmp_path / "d.jsonl",
                   "--fft-size", "2048", "--hop", "512", "--width", "512", "--tile-height", "128", check=False)
    assert proc.returncode == 2
    assert "fft_size: 1024 != 2048" in proc.stderr and "retrain" in proc.stderr
    assert not (tmp_path / "d.jsonl").exists()


def test_a_profile_classifier_on_a_card_of_another_format_is_refused(two_stage_model, tmp_path):
    """The profile classifier renames anchor_free/1 boxes; on a two_stage card it would be
    silently unused, so loading says so instead (docs/model_card.md)."""
    import shutil

    from gnuradio.rfdetect.inference.model_runtime import ModelError, load_model
    m = tmp_path / "m"
    shutil.copytree(two_stage_model, m, ignore=shutil.ignore_patterns("work"))
    card = json.loads((m / "model.card.json").read_text())
    assert load_model(str(m), SMALL, TILE["tile_height"]).profile is None
    card["profile_classifier"] = {"features": "box_profile/1"}
    (m / "model.card.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match=r"profile_classifier applies to anchor_free/1, not"):
        load_model(str(m), SMALL, TILE["tile_height"])


def test_dense_single_stage_trains_exports_and_runs_in_the_detector(tiles, tmp_path):
    from gnuradio.rfdetect.inference.model_runtime import load_model
    runs = tmp_path / "runs"
    train_cli("train", "--tiles", tiles, "--out", runs, "--arch", "dense", "--epochs", "2", "--k-folds", "0",
              "--overfit", "4", "--batch-size", "2", "--lr", "1e-3", "--quiet")
    ck = runs / "final" / "best.pt"
    train_cli("export", "--tiles", tiles, "--checkpoint", ck, "--out", tmp_path / "m", "--no-engine")
    card = json.loads((tmp_path / "m" / "model.card.json").read_text())
    assert card["output"]["format"] == "dense_ltrb/1" and card["dense"]["stride"] == 8
    import onnx
    g = onnx.load(str(tmp_path / "m" / "model.onnx")).graph
    ops = {n.op_type for n in g.node}
    assert not ops & {"NonMaxSuppression", "NonZero", "TopK", "Loop", "If"}  # static shapes, NMS outside
    assert [d.dim_value for d in g.output[0].type.tensor_type.shape.dim] == [1, len(card["labels"]), 16, 64]
    # two epochs leave every score below the card's threshold (measured: no detection on any
    # training tile at it); at 0 the decoded boxes still show the labels and the geometry
    m = load_model(str(tmp_path / "m" / "model.onnx"), SMALL, 128, score_threshold=0.0)
    boxes = [b for t in sorted((tiles / "tiles").glob("*.png")) for b in m.detect(read_tile_png(t))]
    assert boxes, "the exported dense model detects nothing on any training tile"
    assert all(b.label in card["labels"] and b.x1 > b.x0 and b.y1 > b.y0 for b in boxes)
    _same_on_onnx_runtime_and_pytorch(tmp_path / "m", sorted((tiles / "tiles").glob("*.png")), ["scores", "ltrb"])


def _same_on_onnx_runtime_and_pytorch(folder, tiles, outputs):
    """The folder's model.onnx and model.pt give the same outputs and detections (on
    the first of ``tiles`` where the model detects something)."""
    from gnuradio.rfdetect.inference.hardware_profile import PROFILES
    from gnuradio.rfdetect.inference.model_runtime import load_model
    cpu = PROFILES["cpu"]
    by_onnx = load_model(str(folder), SMALL, 128, score_threshold=0.0, profile=cpu)  # .onnx before .pt
    by_torch = load_model(f"{folder}?backend=pytorch", SMALL, 128, score_threshold=0.0, profile=cpu)
    assert (by_onnx.backend.kind, by_torch.backend.kind) == ("onnxruntime", "pytorch")
    assert by_torch.backend.path.name == "model.pt"
    tile = next((t for t in map(read_tile_png, tiles) if by_onnx.detect(t)), None)
    assert tile is not None, "the model detects nothing on any tile"
    # briefly trained: scores are low; keep the upper half so both keep the same boxes
    top = max(b.score for b in by_onnx.detect(tile))
    by_onnx.score_threshold = by_torch.score_threshold = 0.5 * top
    if by_onnx.format == "crop_classifier/1":
        from gnuradio.rfdetect.inference import postprocess
        boxes = np.array([[b.x0, b.y0, b.x1, b.y1] for b in by_onnx.proposer.detect(tile)], np.float32)
        crops, geom = postprocess.letterbox_crops(tile, boxes, by_onnx.crop_size)
        feed = {"crops": crops, "geometry": geom}
    else:
        feed = {"tile": tile[None, None]}
    for a, b in zip(by_onnx.backend.run(feed, outputs), by_torch.backend.run(feed, outputs)):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
    if by_onnx.format != "crop_classifier/1":
        return  # a briefly trained dense head scores many cells alike: NMS ties may break either way
    da, db = by_onnx.detect(tile), by_torch.detect(tile)
    assert len(da) == len(db)
    for x, y in zip(da, db):
        assert x.label == y.label and abs(x.score - y.score) < 1e-3
        np.testing.assert_allclose([x.x0, x.y0, x.x1, x.y1], [y.x0, y.y0, y.x1, y.y1], atol=1e-2)


def test_resume_continues_where_training_stopped(tiles, tmp_path):
    runs = tmp_path / "runs"
    common = ["--tiles", tiles, "--out", runs, "--k-folds", "0", "--overfit", "6", "--batch-size", "4",
              "--lr", "1e-3", "--early-stop", "50", "--quiet"]
    first = train_cli("train", *common, "--epochs", "2").stdout
    ck1 = torch.load(runs / "final" / "last.pt", weights_only=False)
    assert ck1["epoch"] == 2
    assert ck1["config"]["ema"] == 2.0 and "raw_model" in ck1  # anchor_free's default weight average
    second = train_cli("train", *common, "--epochs", "4", "--resume").stdout
    assert "resumed from" in second and "at epoch 3" in second and "epoch 1:" not in second
    ck2 = torch.load(runs / "final" / "last.pt", weights_only=False)
    assert ck2["epoch"] == 4 and [h["epoch"] for h in ck2["history"]] == [1, 2, 3, 4]
    assert ck2["history"][:2] == ck1["history"]
    assert "epoch 2:" in first


def test_the_weight_average_follows_its_recursion_and_warm_up():
    """--ema's average: w_avg <- d w_avg + (1 - d) w after every optimiser step, d rising
    as decay x (1 - exp(-steps / warm-up)); BatchNorm's integer counter is copied."""
    import math
    from rfdetect_training.train import WeightAverage
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    avg = WeightAverage(net, window=4, warmup=2)
    expect = net[0].weight.detach().clone()
    for step in range(1, 6):
        with torch.no_grad():
            net[0].weight.add_(float(step))
            net[1].num_batches_tracked.add_(1)
        avg.update(net)
        d = 0.75 * (1 - math.exp(-step / 2))
        expect = d * expect + (1 - d) * net[0].weight.detach()
        torch.testing.assert_close(avg.model[0].weight, expect)
    assert not torch.equal(avg.model[0].weight, net[0].weight)  # it lags the raw weights
    assert int(avg.model[1].num_batches_tracked) == 5
    assert not any(p.requires_grad for p in avg.model.parameters())
    with pytest.raises(ValueError, match="at least one step"):
        WeightAverage(net, window=0.5, warmup=1)


def test_ema_checkpoints_hold_the_average_and_resume_continues_it(tiles, tmp_path):
    """With --ema the checkpoints' "model" is the average (what validation judged and export
    ships) and "raw_model" the optimiser's weights; --resume continues both."""
    runs = tmp_path / "runs"
    common = ["--tiles", tiles, "--out", runs, "--k-folds", "0", "--overfit", "6", "--batch-size", "2",
              "--lr", "1e-3", "--early-stop", "50", "--quiet", "--ema", "1"]
    train_cli("train", *common, "--epochs", "2")
    ck1 = torch.load(runs / "final" / "last.pt", weights_only=False)
    assert ck1["config"]["ema"] == 1.0 and ck1["ema_updates"] == 2 * 3  # 6 tiles in batches of 2
    weights = [k for k, v in ck1["model"].items() if v.dtype.is_floating_point and "running_" not in k]
    assert len(weights) > 10
    assert not all(torch.equal(ck1["model"][k], ck1["raw_model"][k]) for k in weights)
    out = train_cli("train", *common, "--epochs", "3", "--resume").stdout
    assert "at epoch 3" in out
    ck2 = torch.load(runs / "final" / "last.pt", weights_only=False)
    assert ck2["ema_updates"] == 3 * 3
    bad = train_cli("train", *common[:-2], "--ema", "-1", "--epochs", "1", check=False)
    assert bad.returncode != 0 and bad.stderr.count("error:") == 1 and "--ema" in bad.stderr


def test_init_starts_a_new_schedule_from_an_earlier_runs_weights(tiles, tmp_path):
    """--init loads an earlier checkpoint's weights into a fresh run (new optimiser and
    schedule, epoch 1): with a learning rate of 0 the weights come out as they went in,
    and a checkpoint of another architecture, or none, is one named error."""
    # --ema 0: an average of equal weights is not always bit-equal to them
    common = ["--tiles", tiles, "--k-folds", "0", "--overfit", "6", "--batch-size", "4", "--early-stop", "50",
              "--epochs", "1", "--quiet", "--ema", "0"]
    train_cli("train", *common, "--out", tmp_path / "a", "--lr", "1e-3")
    init = tmp_path / "a" / "final" / "last.pt"
    out = train_cli("train", *common, "--out", tmp_path / "b", "--lr", "0", "--init", init).stdout
    assert f"starting from the weights of {init}" in out and "epoch 1:" in out
    before = torch.load(init, weights_only=False)["model"]
    after = torch.load(tmp_path / "b" / "final" / "last.pt", weights_only=False)["model"]
    weights = [k for k in before if "running_" not in k and "num_batches" not in k]  # BatchNorm statistics move
    assert len(weights) > 10 and all(torch.equal(before[k], after[k]) for k in weights)
    fresh = train_cli("train", *common, "--out", tmp_path / "c", "--lr", "0").stdout
    assert "starting from" not in fresh
    fresh_w = torch.load(tmp_path / "c" / "final" / "last.pt", weights_only=False)["model"]
    assert not all(torch.equal(before[k], fresh_w[k]) for k in weights)

    wrong = train_cli("train", *common, "--out", tmp_path / "d", "--arch", "dense", "--init", init, check=False)
    assert wrong.returncode != 0 and wrong.stderr.count("error:") == 1
    assert "does not fit this run" in wrong.stderr and "arch 'anchor_free' (this run: 'dense')" in wrong.stderr
    missing = train_cli("run", "--data", tmp_path, "--out", tmp_path / "e", "--init", tmp_path / "nope.pt",
                        check=False)
    assert missing.returncode != 0 and "--init" in missing.stderr and "no such checkpoint" in missing.stderr
    assert not (tmp_path / "e" / "work" / "tiles").exists()  # refused before preparing tiles


def test_freeze_backbone_trains_only_what_follows_it(tiles, tmp_path):
    """--freeze backbone: a fine-tune from --init leaves the backbone's weights and BatchNorm
    statistics exactly as they started (in the weight average too), while the pyramid and
    heads train; an architecture without a backbone to freeze, a frozen start without --init,
    and a resume that changes what is frozen are each one error."""
    common = ["--tiles", tiles, "--k-folds", "0", "--overfit", "6", "--batch-size", "4", "--early-stop", "50",
              "--epochs", "1", "--quiet", "--lr", "1e-2"]
    train_cli("train", *common, "--out", tmp_path / "a", "--ema", "0")
    init = tmp_path / "a" / "final" / "last.pt"
    # the default weight average (anchor_free: 2 epochs) is on here
    train_cli("train", *common, "--out", tmp_path / "b", "--init", init, "--freeze", "backbone")
    before = torch.load(init, weights_only=False)["model"]
    ck = torch.load(tmp_path / "b" / "final" / "last.pt", weights_only=False)
    stages = ("stem.", "c3.", "c4.", "c5.", "c6.")
    frozen = [k for k in before if k.startswith(stages)]
    assert any("running_mean" in k for k in frozen) and len(frozen) > 20
    for weights in (ck["model"], ck["raw_model"]):  # the average and the optimiser's
        assert [k for k in frozen if not torch.equal(before[k], weights[k])] == []
    trained = [k for k in before if k.startswith(("tower.", "obj.", "box.", "cls.")) and "running_" not in k
               and "num_batches" not in k]
    assert len(trained) > 5 and any(not torch.equal(before[k], ck["raw_model"][k]) for k in trained)
    # without --freeze the same run moves the backbone too
    train_cli("train", *common, "--out", tmp_path / "c", "--init", init, "--ema", "0")
    free = torch.load(tmp_path / "c" / "final" / "last.pt", weights_only=False)["model"]
    assert any(not torch.equal(before[k], free[k]) for k in frozen)
    resumed = train_cli("train", *common[:-5], "--epochs", "2", "--quiet", "--lr", "1e-2", "--out", tmp_path / "b",
                        "--resume", check=False)
    assert resumed.returncode != 0 and resumed.stderr.count("error:") == 1
    assert "was trained with --freeze backbone, this run asks for --freeze none" in resumed.stderr
    dense = train_cli("train", *common, "--out", tmp_path / "d", "--arch", "dense", "--init", init,
                      "--freeze", "backbone", check=False)
    assert dense.returncode != 0 and dense.stderr.count("error:") == 1
    assert "--freeze backbone is anchor_free's only (--arch dense)" in dense.stderr
    random = train_cli("train", *common, "--out", tmp_path / "e", "--freeze", "backbone", check=False)
    assert random.returncode != 0 and "--freeze backbone: give --init MODEL too" in random.stderr
    # --resume with nothing to resume from starts afresh: the same
    fresh = train_cli("train", *common, "--out", tmp_path / "f", "--freeze", "backbone", "--resume", check=False)
    assert fresh.returncode != 0 and fresh.stderr.count("error:") == 1
    assert "--freeze backbone: give --init MODEL too" in fresh.stderr and "epoch 1" not in fresh.stdout
    assert not (tmp_path / "d").exists() and not (tmp_path / "e").exists()  # refused before training


def test_init_from_an_exported_model(tiles, tmp_path):
    """--init takes an exported anchor_free model (its model.onnx or folder) as well as a
    checkpoint: the run starts from its weights (BatchNorm recalibrated on the training
    tiles) and trains; the embedded default, made for another spectrogram, is one error
    naming the settings, given before any training, unless --init-other-resolution accepts
    its FFT size, hop and width; a missing .onnx is refused up front. --objectness-target
    in_tile is taken (and said); for an architecture without objectness it is refused up front."""
    common = ["--tiles", tiles, "--k-folds", "0", "--overfit", "4", "--batch-size", "4", "--epochs", "1",
              "--quiet", "--ema", "0"]
    first = tmp_path / "a"
    train_cli("train", *common, "--out", first / "work" / "runs")
    train_cli("export", "--checkpoint", first / "work" / "runs" / "final" / "best.pt", "--tiles", tiles,
              "--out", first, "--no-engine", "--no-torch")
    out = train_cli("train", *common, "--out", tmp_path / "b", "--init", first, "--objectness-target", "in_tile").stdout
    assert f"starting from {first / 'model.onnx'}" in out and "every weight;" in out and "epoch 1:" in out
    assert "train: objectness target in_tile (--objectness-target)" in out
    assert (tmp_path / "b" / "final" / "best.pt").is_file()
    default = train_cli("train", *common, "--out", tmp_path / "c", "--init", "default", check=False)
    assert default.returncode != 0 and default.stderr.count("error:") == 1
    assert "other spectrogram settings than these tiles" in default.stderr and "fft_size" in default.stderr
    assert "--init-other-resolution" in default.stderr and "epoch 1:" not in default.stdout
    # a companion folder beside it (its card's derived_from runs a's network) is checked against
    # its own card: another hop here, where a's own card would fit these tiles
    card = json.loads((first / "model.card.json").read_text())
    (tmp_path / "a-short").mkdir()
    (tmp_path / "a-short" / "model.card.json").write_text(json.dumps(dict(
        card, spectrogram=dict(card["spectrogram"], hop=card["spectrogram"]["hop"] * 2), derived_from={"model": "a"})))
    short = train_cli("train", *common, "--out", tmp_path / "s", "--init", tmp_path / "a-short", check=False)
    assert short.returncode != 0 and "other spectrogram settings than these tiles" in short.stderr \
        and "hop" in short.stderr and "epoch 1:" not in short.stdout
    # asked for: the default's weights start a run at these tiles' finer grid
    regrid = train_cli("train", *common, "--out", tmp_path / "c", "--init", "default", "--init-other-resolution")
    assert "made at another resolution (fft_size: 4096 != 1024; hop: 2048 != 512; width: 1024 != 512)" \
        in regrid.stdout and "epoch 1:" in regrid.stdout
    alone = train_cli("run", "--data", tmp_path, "--out", tmp_path / "f", "--init-other-resolution", check=False)
    assert alone.returncode != 0 and "--init-other-resolution: give --init MODEL too" in alone.stderr
    assert not (tmp_path / "f" / "work" / "tiles").exists()  # refused before preparing tiles
    no_obj = train_cli("run", "--data", tmp_path, "--out", tmp_path / "g", "--arch", "two_stage",
                       "--objectness-target", "in_tile", check=False)
    assert no_obj.returncode != 0 and no_obj.stderr.count("error:") == 1
    assert "--objectness-target is anchor_free's; --arch two_stage has no objectness" in no_obj.stderr
    assert not (tmp_path / "g" / "work" / "tiles").exists()
    missing = train_cli("run", "--data", tmp_path, "--out", tmp_path / "d", "--init", tmp_path / "nope.onnx",
                        check=False)
    assert missing.returncode != 0 and "no such model file" in missing.stderr
    assert not (tmp_path / "d" / "work" / "tiles").exists()


def test_max_minutes_fills_its_budget_and_stops_early_only_late_in_the_schedule(tiles, tmp_path):
    """--max-minutes stretches the schedule to the budget; a validation AP that stops moving
    (here: learning rate 0, so it never moves) ends the run only after 3/4 of that schedule,
    when the learning rate is low, and the checkpoint comes from that last quarter."""
    from rfdetect_training.train import MIN_SCHEDULE_FRACTION
    out = train_cli("train", "--tiles", tiles, "--k-folds", "0", "--overfit", "4", "--batch-size", "4",
                    "--epochs", "2", "--lr", "0", "--early-stop", "1", "--max-minutes", "0.25",
                    "--out", tmp_path / "a").stdout
    ck = torch.load(tmp_path / "a" / "final" / "last.pt", weights_only=False)
    planned, ran = ck["epochs"], len(ck["history"])
    # stretched from 2 to fill 15 s (about 15 epochs on a quiet 2-core machine, 7 with two
    # trainings beside it); >= 5 so that 3/4 of it (3) is past where patience 1 stopped (2)
    assert planned >= 5, out[-2000:]
    assert ran >= int(MIN_SCHEDULE_FRACTION * planned), out[-2000:]
    # nothing improved after the first epoch, and yet the checkpoint is the first of the
    # schedule's last quarter: an early best (a high learning rate) is not the model
    assert out.count("*best") == 2, out[-2000:]
    assert ck["best_epoch"] > 1 and ck["late"] is True
    assert "early stop" in out or "--max-minutes 0.25 reached" in out


def _check_label_rule_key(model_dir, ds, key, attr, default, bad, message):
    """A card without label_rule.KEY loads with the model's ``attr`` ``default``; one with ``bad`` is refused."""
    import json

    from gnuradio.rfdetect.inference.model_runtime import ModelError, load_model
    path = model_dir / "model.card.json"
    card = json.loads(path.read_text())
    del card["label_rule"][key]
    path.write_text(json.dumps(card))
    assert getattr(load_model(str(model_dir), ds["params"], ds["tile_height"]), attr) == default
    card["label_rule"][key] = bad
    path.write_text(json.dumps(card))
    with pytest.raises(ModelError, match=message):
        load_model(str(model_dir), ds["params"], ds["tile_height"])


def test_export_writes_class_confidence_into_the_card_the_detector_reads(tiles, tmp_path):
    """export --class-confidence (and --score-rule, --class-region, --box-vote,
    --refine-min-rows, --splatter-db, --refine-peak-db) goes into the card, where the Detector reads it; an impossible value is one error and no model. (run's choice on validation tiles:
    test_anchor_free.py::test_class_confidence_choice_follows_class_certainty.)"""
    import json

    from gnuradio.rfdetect.inference.model_runtime import ModelError, load_model
    from rfdetect_training.prepare import load_dataset
    train_cli("train", "--tiles", tiles, "--k-folds", "0", "--overfit", "6", "--batch-size", "4", "--epochs", "1",
              "--quiet", "--out", tmp_path / "a")
    ck = tmp_path / "a" / "final" / "best.pt"
    ds = load_dataset(tiles)
    train_cli("export", "--tiles", tiles, "--checkpoint", ck, "--out", tmp_path / "m", "--class-confidence", "0.3",
              "--no-engine", "--no-torch")
    card = json.loads((tmp_path / "m" / "model.card.json").read_text())
    assert card["label_rule"]["class_confidence"] == 0.3
    assert card["label_rule"]["score"] == "objectness_x_probability"
    m = load_model(str(tmp_path / "m"), ds["params"], ds["tile_height"])
    assert m.class_confidence == 0.3 and m.score_rule == "objectness_x_probability"
    train_cli("export", "--tiles", tiles, "--checkpoint", ck, "--out", tmp_path / "o", "--score-rule",
              "objectness", "--no-engine", "--no-torch")
    assert load_model(str(tmp_path / "o"), ds["params"], ds["tile_height"]).score_rule == "objectness"
    # a card without the key was made under the default rule; a card with an unknown one is refused
    _check_label_rule_key(tmp_path / "o", ds, "score", "score_rule", "objectness_x_probability", "probability",
                          "label_rule.score 'probability' is not one of objectness")
    bad = train_cli("export", "--tiles", tiles, "--checkpoint", ck, "--out", tmp_path / "n", "--class-confidence",
                    "1.5", "--no-engine", "--no-torch", check=False)
    assert bad.returncode != 0 and bad.stderr.count("error:") == 1 and "must be in (0, 1]" in bad.stderr
    assert not (tmp_path / "n" / "model.onnx").exists()
    # the class region: trained models take the box's central half; --class-region 0 gives the
    # old rule back; a card without the key (made before it) is read as 0; a bad one is refused
    assert m.class_region == 0.5 and m.cell_strides == (4.0, 8.0)
    train_cli("export", "--tiles", tiles, "--checkpoint", ck, "--out", tmp_path / "c", "--class-region", "0",
              "--no-engine", "--no-torch")
    assert json.loads((tmp_path / "c" / "model.card.json").read_text())["label_rule"]["class_region"] == 0.0
    assert load_model(str(tmp_path / "c"), ds["params"], ds["tile_height"]).class_region == 0.0
    _check_label_rule_key(tmp_path / "m", ds, "class_region", "class_region", 0.0, "centre",
                          "label_rule.class_region 'centre' is not a number in")
    bad = train_cli("export", "--tiles", tiles, "--checkpoint", ck, "--out", tmp_path / "r", "--class-region",
                    "2", "--no-engine", "--no-torch", check=False)
    assert bad.returncode != 0 and bad.stderr.count("error:") == 1 and "--class-region" in bad.stderr
    assert not (tmp_path / "r" / "model.onnx").exists()
    # box voting: off unless asked for (the card says 0.0)
    _check_anchor_free_key(tiles, ck, ds, tmp_path, m, "--box-vote", "box_vote", 0.0, 0.6, "2", 1.5,
                           r"anchor_free.box_vote 1.5 is not a number in \[0, 1\]")
    # time edges of boxes from 2 rows tall unless asked for
    # (a card from before the key: 8, as then)
    _check_anchor_free_key(tiles, ck, ds, tmp_path, m, "--refine-min-rows", "refine_min_rows", 2, 4, "0", 0.5,
                           r"anchor_free.refine_min_rows 0.5 is not a whole number of rows >= 1", absent=8)
    # switching splatter dropped at 20 dB unless asked for (a card from before the key: off)
    _check_anchor_free_key(tiles, ck, ds, tmp_path, m, "--splatter-db", "splatter_db", 20.0, 12.5, "-1", "loud",
                           r"anchor_free.splatter_db 'loud' is not a number of dB >= 0", absent=0.0)
    # a box with no clear profile snaps to its pixels 15 dB over the floor unless asked for (a
    # card from before the key: off)
    _check_anchor_free_key(tiles, ck, ds, tmp_path, m, "--refine-peak-db", "refine_peak_db", 15.0, 20.0, "-1",
                           "bright", r"anchor_free.refine_peak_db 'bright' is not a number of dB >= 0", absent=0.0)
    # a box over part of a chirp's sweep grows to the whole sweep unless asked not to (a card
    # from before the key: off)
    assert json.loads((tmp_path / "m" / "model.card.json").read_text())["anchor_free"]["trace_lines"] is True
    assert m.trace_lines is True
    out = tmp_path / "untraced"
    train_cli("export", "--tiles", tiles, "--checkpoint", ck, "--out", out, "--no-trace-lines", "--no-engine",
              "--no-torch")
    card = json.loads((out / "model.card.json").read_text())
    assert card["anchor_free"]["trace_lines"] is False
    assert load_model(str(out), ds["params"], ds["tile_height"]).trace_lines is False
    card["anchor_free"]["trace_lines"] = True
    (out / "model.card.json").write_text(json.dumps(card))
    assert load_model(str(out), ds["params"], ds["tile_height"]).trace_lines is True
    del card["anchor_free"]["trace_lines"]
    (out / "model.card.json").write_text(json.dumps(card))
    assert load_model(str(out), ds["params"], ds["tile_height"]).trace_lines is False
    card["anchor_free"]["trace_lines"] = "yes"
    (out / "model.card.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match=r"anchor_free.trace_lines 'yes' is not true or false"):
        load_model(str(out), ds["params"], ds["tile_height"])
    bad = train_cli("export", "--tiles", tiles, "--checkpoint", ck, "--out", tmp_path / "bad_trace",
                    "--trace-lines=maybe", "--no-engine", "--no-torch", check=False)
    assert bad.returncode != 0 and bad.stderr.count("error:") == 1 and "--trace-lines" in bad.stderr
    assert not (tmp_path / "bad_trace" / "model.onnx").exists()


def _check_anchor_free_key(tiles, ck, ds, tmp_path, m, flag, key, default, value, bad_flag, bad_card, match,
                           absent=None):
    """An anchor_free card key with an export flag: the model ``m`` exported without the flag
    has ``default`` in its card and Detector; the flag's ``value`` goes into the card and the
    Detector reads it; a card without the key (made before it) is read as ``absent`` (by
    default ``default``); a bad
    card value is refused when loading, a bad flag with one error and no model."""
    import json

    from gnuradio.rfdetect.inference.model_runtime import ModelError, load_model
    assert json.loads((tmp_path / "m" / "model.card.json").read_text())["anchor_free"][key] == default
    assert getattr(m, key) == default
    out = tmp_path / key
    train_cli("export", "--tiles", tiles, "--checkpoint", ck, "--out", out, flag, str(value), "--no-engine",
              "--no-torch")
    card = json.loads((out / "model.card.json").read_text())
    assert card["anchor_free"][key] == value
    assert getattr(load_model(str(out), ds["params"], ds["tile_height"]), key) == value
    del card["anchor_free"][key]
    (out / "model.card.json").write_text(json.dumps(card))
    assert getattr(load_model(str(out), ds["params"], ds["tile_height"]), key) == (
        default if absent is None else absent)
    card["anchor_free"][key] = bad_card
    (out / "model.card.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match=match):
        load_model(str(out), ds["params"], ds["tile_height"])
    bad = train_cli("export", "--tiles", tiles, "--checkpoint", ck, "--out", tmp_path / f"bad_{key}", flag,
                    bad_flag, "--no-engine", "--no-torch", check=False)
    assert bad.returncode != 0 and bad.stderr.count("error:") == 1 and flag in bad.stderr
    assert not (tmp_path / f"bad_{key}" / "model.onnx").exists()


def test_ddp_two_gloo_processes_on_cpu(tiles, tmp_path):
    runs = tmp_path / "ddp"
    cmd = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", "-m", "rfdetect_training.cli", "train",
           "--tiles", str(tiles), "--out", str(runs), "--k-folds", "0", "--overfit", "4", "--epochs", "2",
           "--batch-size", "2", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ck = torch.load(runs / "final" / "last.pt", weights_only=False)
    assert ck["epoch"] == 2 and ck["config"]["overfit"] == 4
    assert proc.stdout.count("epoch 2:") == 1  # rank 0 reports, rank 1 stays quiet



def test_faster_rcnn_trains_and_exports_boxes_scores_labels(tiles, tmp_path):
    from gnuradio.rfdetect.inference.model_runtime import load_model
    runs = tmp_path / "frcnn"
    train_cli("train", "--tiles", tiles, "--out", runs, "--arch", "faster_rcnn", "--backbone", "resnet18",
              "--epochs", "1", "--k-folds", "0", "--overfit", "2", "--batch-size", "2", "--quiet")
    proc = train_cli("export", "--tiles", tiles, "--checkpoint", runs / "final" / "best.pt", "--out",
                     tmp_path / "m", "--no-engine")
    card = json.loads((tmp_path / "m" / "model.card.json").read_text())
    assert card["output"]["format"] == "boxes_scores_labels/1" and card["backbone"] == "resnet18"
    # detections are compared as sets (NMS order of near-tied boxes is arbitrary)
    assert card["onnx_check"]["max_excess_error"] <= 1e-4
    if not (tmp_path / "m" / "model.pt").exists():
        assert "torch.export cannot capture faster_rcnn" in proc.stderr
    m = load_model(str(tmp_path / "m" / "model.onnx"), SMALL, 128, score_threshold=0.0)
    # the first tile with detections (a ResNet-18 pass per tile: not all of them)
    boxes = next((bs for t in sorted((tiles / "tiles").glob("*.png")) if (bs := m.detect(read_tile_png(t)))), [])
    assert boxes, "the exported Faster R-CNN detects nothing on any training tile"
    assert all(b.label in card["labels"] and b.x1 > b.x0 for b in boxes)


def test_detection_sets_match_in_any_order_and_differences_are_refused():
    from rfdetect_training.export import ExportError, compare_detections
    boxes = np.array([[0, 0, 10, 10], [20, 0, 30, 10], [0, 20, 10, 30]], np.float32)
    scores = np.array([0.5, 0.5000001, 0.4], np.float32)
    labels = np.array([1, 1, 2])
    order = [1, 0, 2]
    assert compare_detections([boxes, scores, labels], [boxes[order], scores[order], labels[order]]) < 1e-4
    moved = boxes.copy()
    moved[2] += 0.05
    with pytest.raises(ExportError, match="detections differ from PyTorch by 0.0"):
        compare_detections([boxes, scores, labels], [moved, scores, labels])
    with pytest.raises(ExportError, match="finds 2 boxes, PyTorch 3"):
        compare_detections([boxes, scores, labels], [boxes[:2], scores[:2], labels[:2]])
    with pytest.raises(ExportError, match="no ONNX counterpart"):
        compare_detections([boxes, scores, labels], [boxes, scores, np.array([1, 1, 3])])


def test_a_box_found_but_not_named_counts_as_found_per_truth_label_and_not_as_a_miss():
    """recall_by_label is class-agnostic per truth label (a family never boxed stands out from
    one boxed as ``signal``); the confusion matrix puts unnamed boxes in their own column."""
    from rfdetect_training.detection_metrics import UNNAMED, confusion_and_prf, recall_by_label

    def box(t, f, label, score=None):
        b = {"t_start": t, "t_stop": t + 1.0, "f_low": f, "f_high": f + 1.0, "label": label}
        return b if score is None else {**b, "score": score}
    truth = [[box(0, 0, "ofdm"), box(2, 0, "radar"), box(4, 0, "radar"), box(6, 0, "bpsk")]]
    found = [[box(0, 0.1, "signal", 0.9), box(2, 0, "radar", 0.8), box(8, 8, "ofdm", 0.7), box(6, 0, "ofdm", 0.6)]]
    r = recall_by_label(truth, found)
    assert r == {"ofdm": {"recall": 1.0, "truth": 1}, "radar": {"recall": 0.5, "truth": 2},
                 "bpsk": {"recall": 1.0, "truth": 1}}
    assert recall_by_label(truth, found, score_threshold=0.85)["radar"]["recall"] == 0.0
    c = confusion_and_prf(truth, found, ["ofdm", "radar"], 0.5)
    names = c["confusion_labels"]
    assert names == ["ofdm", "radar", UNNAMED, "background"]
    m = {(names[i], names[j]): v for i, row in enumerate(c["confusion"]) for j, v in enumerate(row) if v}
    assert m == {("ofdm", UNNAMED): 1, ("radar", "radar"): 1, ("radar", "background"): 1,
                 (UNNAMED, "ofdm"): 1, ("background", "ofdm"): 1}
    assert c["per_class"]["ofdm"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "truth": 1, "found": 2}
    assert c["per_class"]["radar"]["recall"] == 0.5 and c["per_class"]["radar"]["precision"] == 1.0


def test_ap_per_snr_band_counts_its_own_signals_and_leaves_other_bands_finds_out():
    """ap_by_snr: a band's AP has that band's truth only; a box found on a signal of another
    band, matching it or boxing it badly, is neither a hit nor a false alarm there, and a
    false alarm on no signal counts in every band."""
    from rfdetect_training.detection_metrics import ap_by_snr, ap_in_snr_range

    def box(t, snr=None, score=None):
        b = {"t_start": t, "t_stop": t + 1.0, "f_low": 0.0, "f_high": 1.0, "label": "x"}
        if snr is not None:
            b["snr_db"] = snr
        return b if score is None else {**b, "score": score}
    truth = [[box(0, snr=12.0), box(2, snr=3.0), box(4)]]
    # a box from 0.8 to 2.6 touches both signals: IoU 0.2/2.6 with the 12 dB one, 0.6/2.2
    # with the 3 dB one, so it is about the 3 dB signal
    straddle = {**box(0.8, score=0.955), "t_stop": 2.6}
    # ranked: a false alarm on no signal, a bad box (IoU 1/3) on the 3 dB signal, the
    # straddling box, the 3 dB signal, the 12 dB signal, the signal without an SNR
    found = [[box(9, score=0.97), box(2.5, score=0.96), straddle, box(2, score=0.95), box(0, score=0.9),
              box(4, score=0.8)]]
    # 10-15 dB: the false alarm first, then its own signal (the 3 dB signal's three boxes left
    # out): 1/2; were they counted as false alarms it would be 1/5 (1/3 with only the bad box
    # or only the straddling one counted), were the false alarm ignored 1
    assert ap_in_snr_range(truth, found, 10.0, 15.0) == 0.5
    # 0-5 dB: the false alarm, the bad box and the straddling box are false alarms there, then
    # the signal: 1/4 (1/3 were a box touching another band's signal left out of this one)
    assert ap_in_snr_range(truth, found, 0.0, 5.0) == 0.25
    assert ap_in_snr_range(truth, found, 20.0, 25.0) is None
    by = ap_by_snr(truth, found)
    assert by == {"0-5 dB": {"AP": 0.25, "truth": 1}, "10-15 dB": {"AP": 0.5, "truth": 1}}
    # nothing found in a band that has truth: 0, not None
    assert ap_in_snr_range(truth, [[box(9, score=0.9)]], 10.0, 15.0) == 0.0


def test_bootstrap_ap_resamples_recordings_alike_for_every_detector():
    """bootstrap_ap: AP over resamples of the recordings (groups), the same draws for two
    detectors on one set, so they compare draw by draw; a band takes its own signals only,
    and a draw with nothing to find is NaN, not 0."""
    import numpy as np
    from rfdetect_training.detection_metrics import ap_in_snr_range, average_precision, bootstrap_ap

    def box(snr, score=None):
        b = {"t_start": 0.0, "t_stop": 1.0, "f_low": 0.0, "f_high": 1.0, "label": "x", "snr_db": snr}
        return b if score is None else {**b, "score": score}
    far = {"t_start": 5.0, "t_stop": 6.0, "f_low": 0.0, "f_high": 1.0, "label": "x", "score": 0.95}
    truth = [[box(25.0)] for _ in range(10)]
    found_a = [[box(25.0, 0.9)] for _ in range(10)]
    # b misses half the signals and has a false alarm above its hits in the last recording
    found_b = [[box(25.0, 0.9)] if k < 5 else [] for k in range(10)]
    found_b[9] = [far]
    a, b = bootstrap_ap(truth, found_a, draws=400), bootstrap_ap(truth, found_b, draws=400)
    assert a.shape == (400,) and np.all(a == 1.0)
    assert np.array_equal(b, bootstrap_ap(truth, found_b, draws=400))  # deterministic
    assert not np.array_equal(b, bootstrap_ap(truth, found_b, draws=400, seed=1))
    # paired: b is never above a, and below it unless a draw holds only recordings 0-4
    assert np.all(b <= a) and np.mean(b < a) > 0.95
    assert np.min(b) < average_precision(truth, found_b) < np.max(b)
    # each draw is the AP of the recordings drawn, scored as a whole (matching within each
    # recording in score order, ties included): replayed here from the same generator
    rng = np.random.default_rng(5)
    def rec(k):
        t = [box(float(rng.choice([3.0, 12.0, 22.0]))) | {"t_start": 2.0 * i, "t_stop": 2.0 * i + 1.0}
             for i in range(int(rng.integers(0, 4)))]
        f = [dict(t[int(rng.integers(len(t)))] if t and rng.random() < 0.7 else far, score=float(rng.choice([0.5, 0.7])),
                  t_stop=(t[0]["t_stop"] if t and rng.random() < 0.3 else None) or 0.0) for _ in range(int(rng.integers(0, 5)))]
        for g in f:
            if g["t_stop"] <= g["t_start"]:
                g["t_stop"] = g["t_start"] + float(rng.choice([1.0, 1.5]))
        return t, f
    recs = [rec(k) for k in range(7)]
    T, F = [r[0] for r in recs], [r[1] for r in recs]
    for lo, hi in ((-np.inf, np.inf), (10.0, np.inf), (0.0, 5.0)):
        got = bootstrap_ap(T, F, lo, hi, draws=60, seed=3)
        draws = np.random.default_rng(3)
        for d in range(60):
            k = draws.integers(0, 7, 7)
            t, f = [T[i] for i in k], [F[i] for i in k]
            want = average_precision(t, f) if np.isinf(lo) else ap_in_snr_range(t, f, lo, hi)
            want = np.nan if want is None else want
            # (ap_in_snr_range rounds to 4 decimals)
            assert (np.isnan(got[d]) and np.isnan(want)) or abs(got[d] - want) <= (1e-9 if np.isinf(lo) else 5e-5), \
                (lo, d, got[d], want)
    # one recording: every draw is that recording
    assert np.all(bootstrap_ap(truth[:1], found_b[:1], draws=50) == average_precision(truth[:1], found_b[:1]))
    # a band: its own signals only; a band with none is NaN in every draw
    mixed = [[box(12.0)], [box(25.0)]]
    hits = [[box(12.0, 0.9)], []]
    assert np.all(bootstrap_ap(mixed, hits, 10.0, 15.0, draws=50)[np.isfinite(
        bootstrap_ap(mixed, hits, 10.0, 15.0, draws=50))] == ap_in_snr_range(mixed, hits, 10.0, 15.0))
    assert np.isnan(bootstrap_ap(mixed, hits, 10.0, 15.0, draws=50)).any()  # draws of recording 2 only
    top = bootstrap_ap(mixed, hits, 20.0, 30.0, draws=50)
    assert np.all(top[np.isfinite(top)] == 0.0) and np.isfinite(top).sum() > 10
    assert np.all(np.isnan(bootstrap_ap(mixed, hits, 0.0, 5.0, draws=50)))
