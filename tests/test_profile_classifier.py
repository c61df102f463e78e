"""The profile classifier (rfdetect.inference.box_profile, training/profile.py): its features,
that it tells OFDM from resource blocks on recordings it was not fitted to, that it names
boxes without moving or rescoring them, and the card key, `rfdetect-train profile` and
`run --profile` around it. Small tiles (128 x 512)."""
import json

import numpy as np
import pytest

from conftest import RATE, SMALL, SMALL_ARGS, TILE, run_cli
from gnuradio.rfdetect.apps.synth import synth_dataset
from gnuradio.rfdetect.inference import box_profile
from gnuradio.rfdetect.inference.postprocess import UNKNOWN_LABEL, decode_anchor_free

torch = pytest.importorskip("torch")

from rfdetect_training import profile  # noqa: E402
from rfdetect_training.prepare import PrepareOptions, load_dataset, prepare  # noqa: E402

DB = SMALL.db_per_unit


def _tile(h=128, w=512, level=0.2):
    return np.full((h, w), level, np.float32)


# ---------------------------------------------------------------- features
def test_resample_is_the_mean_over_each_bin_and_continues_the_ends():
    p = np.arange(8, dtype=np.float32)
    assert box_profile.resample(p, 0, 8, 4).tolist() == [0.5, 2.5, 4.5, 6.5]
    assert box_profile.resample(p, 2, 3, 1)[0] == pytest.approx(2.0)
    assert box_profile.resample(p, 1.5, 2.5, 1)[0] == pytest.approx(1.5)
    # beyond the ends the end cells continue, not zeros
    assert box_profile.resample(p, -2, 0, 1)[0] == pytest.approx(0.0)
    assert box_profile.resample(p, 8, 10, 1)[0] == pytest.approx(7.0)


def test_a_centre_null_shows_in_the_centre_features_and_a_flat_block_does_not():
    box = np.array([[200.0, 30.0, 280.0, 90.0]])
    flat = _tile()
    flat[30:90, 200:280] = 0.5
    null = flat.copy()
    null[30:90, 239:241] = 0.3      # 0.2 of 60 dB below the block: 12 dB
    c = slice(box_profile.N_BAND, box_profile.N_BAND + box_profile.N_CENTRE)
    f_flat, f_null = box_profile.box_features(flat, box, DB)[0], box_profile.box_features(null, box, DB)[0]
    assert np.abs(f_flat[c]).max() < 1e-6
    assert f_null[c].min() == pytest.approx(-12.0 / box_profile.DB_SCALE, abs=1e-4)
    # the band profile sees the block's edges: the margin is below the block by its level
    assert f_flat[0] == pytest.approx(-18.0 / box_profile.DB_SCALE, abs=1e-4)
    assert f_flat[box_profile.N_BAND // 2] == pytest.approx(0.0, abs=1e-6)
    # profiles are relative to the box's median: a gain step moves only the level feature
    f_up = box_profile.box_features(null + 0.1, box, DB)[0]
    assert np.allclose(f_up[:-2], f_null[:-2], atol=1e-5)
    assert f_up[-2] - f_null[-2] == pytest.approx(6.0 / box_profile.DB_SCALE, abs=1e-4)
    assert f_null[-4] == pytest.approx(np.log2(80)) and f_null[-3] == pytest.approx(np.log2(60))


def test_features_of_boxes_at_and_beyond_the_tiles_edges_are_finite():
    t = _tile()
    t[100:128, 0:30] = 0.6
    boxes = np.array([[0.0, 100.0, 30.0, 128.0], [500.0, 0.0, 512.0, 2.0], [-3.0, -2.0, 1.0, 1.0],
                      [10.0, 10.0, 10.5, 10.4]])
    f = box_profile.box_features(t, boxes, DB)
    assert f.shape == (4, box_profile.N_FEATURES) and np.isfinite(f).all()


# ---------------------------------------------------------------- fitted on real recordings
@pytest.fixture(scope="module")
def ofdm_rb(tmp_path_factory):
    """Two prepared folders of classic recordings holding OFDM bursts and resource blocks
    only, from different seeds: one to fit on, one to test on."""
    out = {}
    for name, seed in (("fit", 21), ("test", 22)):
        d = tmp_path_factory.mktemp(f"ofdm_rb_{name}")
        synth_dataset(d / "rec", n=6, seed=seed, sample_rate=RATE, duration=0.3, snr_db=(8.0, 20.0), n_signals=6,
                      classes=("ofdm", "rb"))
        prepare(d / "rec", d / "tiles", PrepareOptions(SMALL, TILE["tile_height"], TILE["overlap"]),
                progress=False)
        out[name] = load_dataset(d / "tiles")
    return out


def test_fitted_on_some_recordings_it_tells_ofdm_from_resource_blocks_on_others(ofdm_rb):
    """What the network confuses (flat rectangles of similar sizes; OFDM has a null at its centre
    carrier): on boxes of recordings of another seed, unjittered, at least 85 % right, where a
    classifier that cannot see the centre (its centre features zeroed) does worse."""
    labels = ["ofdm", "rb"]
    fit_ds, test_ds = ofdm_rb["fit"], ofdm_rb["test"]
    x, y = profile.examples(fit_ds, fit_ds["images"], labels, seed=0, progress=False)
    value = profile.fit(x, y, len(labels), seed=0)
    pc = box_profile.ProfileClassifier(value, len(labels), DB)
    xt, yt = profile.examples(test_ds, test_ds["images"], labels, seed=1, progress=False)
    exact = slice(None, None, profile.COPIES + 1)   # each box's own features, before its jittered copies
    assert (yt[exact] == 0).sum() >= 4 and (yt[exact] == 1).sum() >= 4, "too few of one class to test on"
    acc = float((pc.logits(xt[exact]).argmax(1) == yt[exact]).mean())
    assert acc >= 0.85, acc
    blind = box_profile.N_BAND + np.arange(box_profile.N_CENTRE)
    xb = x.copy()
    xb[:, blind] = 0
    xb[:, :box_profile.N_BAND] = 0
    pb = box_profile.ProfileClassifier(profile.fit(xb, y, len(labels), seed=0), len(labels), DB)
    xtb = xt[exact].copy()
    xtb[:, blind] = 0
    xtb[:, :box_profile.N_BAND] = 0
    assert float((pb.logits(xtb).argmax(1) == yt[exact]).mean()) < acc


def test_run_fits_none_where_a_label_has_too_few_boxes(ofdm_rb, capsys, monkeypatch):
    """Fitted to a handful of boxes per label it would name by memory (issue 11's 69 classes, a
    median of 3 boxes each): `run`'s call says so and gives none; asked for, it warns and fits."""
    ds = ofdm_rb["fit"]
    x, y = profile.examples(ds, ds["images"], ["ofdm", "rb"], progress=False)
    fewest = int(np.bincount(y).min()) // (profile.COPIES + 1)
    assert fewest >= 4
    assert profile.fit_on_tiles(ds, ds["images"], ["ofdm", "rb"], progress=False, min_boxes=fewest) is not None
    assert profile.fit_on_tiles(ds, ds["images"], ["ofdm", "rb"], progress=False, min_boxes=fewest + 1) is None
    assert "not fitted: 1 labels have fewer than" in capsys.readouterr().out
    monkeypatch.setattr(profile, "MIN_BOXES", fewest + 1)
    value = profile.fit_on_tiles(ds, ds["images"], ["ofdm", "rb", "tone"], progress=False)
    assert value is not None and "WARNING: 1 labels have fewer than" in capsys.readouterr().out
    monkeypatch.setattr(profile, "MIN_BOXES", fewest)
    assert profile.fit_on_tiles(ds, ds["images"], ["ofdm", "rb"], progress=False) is not None
    assert "WARNING" not in capsys.readouterr().out


# ---------------------------------------------------------------- in the decode
def _value(n_labels, prefer):
    """A profile classifier that prefers class ``prefer`` whatever the box (zero first layer)."""
    f, h = box_profile.N_FEATURES, 4
    b2 = [0.0] * n_labels
    b2[prefer] = 5.0
    return {"features": box_profile.FEATURES, "mean": [0.0] * f, "std": [1.0] * f,
            "w1": [[0.0] * h for _ in range(f)], "b1": [0.0] * h, "w2": [[0.0] * n_labels for _ in range(h)],
            "b2": b2}


@pytest.mark.parametrize("class_region", [0.0, 0.5])
def test_it_renames_the_networks_boxes_without_moving_or_rescoring_them(class_region):
    h, w, k = 32, 64, 3
    obj = np.zeros((1, 1, h, w), np.float32)
    probs = np.full((1, k, h, w), 1.0 / k, np.float32)
    boxes = np.zeros((1, 4, h, w), np.float32)
    # a degenerate box (x1 <= x0) first in raster order: the decode drops it before NMS, and the
    # classes of the boxes it keeps must still be their own cells'
    # and a box scored under the threshold (objectness 0.35 x probability 0.5), which only the
    # boxes that pass are relabelled without: the profile is read for the boxes reported
    cells = (((1, 1), [0.0, 0.0, 1.0], [20, 5, 20, 9]), ((5, 10), [0.55, 0.45, 0.0], [70, 10, 90, 30]),
             ((20, 40), [0.2, 0.0, 0.8], [300, 70, 340, 90]), ((28, 60), [0.5, 0.5, 0.0], [470, 100, 490, 120]))
    for (i, j), p, b in cells:
        obj[0, 0, i, j] = 0.35 if i == 28 else 0.9
        probs[0, :, i, j] = p
        boxes[0, :, i, j] = b
    args = dict(score_threshold=0.3, nms_iou=0.5, class_region=class_region, strides=(4.0, 8.0))
    plain = decode_anchor_free(obj, probs, boxes, **args)
    pc = box_profile.ProfileClassifier(_value(k, 1), k, DB)
    tile = _tile(128, 512)
    seen = []

    def reclassify(b, p):
        seen.append(len(b))
        return pc.combine(tile, b, p)
    got = decode_anchor_free(obj, probs, boxes, reclassify=reclassify, **args)
    assert seen == [2]
    order = np.argsort(plain[0][:, 0])
    gorder = np.argsort(got[0][:, 0])
    assert np.array_equal(plain[0][order], got[0][gorder]) and np.allclose(plain[1][order], got[1][gorder])
    # the unsure box (0.55 / 0.45) goes to the profile's class; the sure one (0.8 of class 2,
    # none of class 1) keeps its name: a product cannot raise a class the network rules out
    assert plain[2][order].tolist() == [0, 2] and got[2][gorder].tolist() == [1, 2]


def test_combine_is_a_product_no_surer_than_the_networks_best_class():
    """The profile picks among the classes the network finds likely; a box the network could
    not name (no class at class_confidence) stays unnamed, whatever the profile says."""
    pc = box_profile.ProfileClassifier(_value(3, 1), 3, DB)
    boxes = np.array([[10, 10, 20, 20], [30, 30, 40, 40], [50, 50, 60, 60], [70, 70, 80, 80]], np.float32)
    net = np.array([[0.4, 0.3, 0.3], [0.0, 0.0, 0.0], [0.7, 0.3, 0.0], [0.5, 0.5, 0.0]], np.float32)
    got = pc.combine(_tile(), boxes, net)
    p = pc.probs(_tile(), boxes[:1])[0].astype(np.float64)
    prod = net[0] * p / (net[0] * p).sum()
    assert got[0] == pytest.approx(prod * 0.4 / prod.max(), abs=1e-6)
    assert got[0].argmax() == 1 and got[0].max() == pytest.approx(0.4)   # renamed, not surer: still unnamed
    assert got[1].tolist() == [0.0, 0.0, 0.0]                            # no class mass: nothing to share out
    assert got[2].argmax() == 1 and got[2].max() == pytest.approx(0.7)   # named, and named otherwise
    assert got[3].argmax() == 1 and got[3].max() == pytest.approx(0.5)
    assert (got.max(axis=1) <= net.max(axis=1) + 1e-6).all()


def test_uncapped_it_names_what_the_network_left_unnamed_and_a_label_it_never_saw_is_the_networks():
    """``cap_at_network`` false (the embedded cards): the renormalised product names the box,
    surer than the network may be. A label the classifier saw no box of (``fitted`` false) gets
    a uniform share from it, so the network alone weighs that label against the others."""
    boxes = np.array([[10, 10, 20, 20], [30, 30, 40, 40]], np.float32)
    net = np.array([[0.4, 0.3, 0.3], [0.2, 0.2, 0.6]], np.float32)
    free = box_profile.ProfileClassifier({**_value(3, 1), "cap_at_network": False}, 3, DB)
    p = free.probs(_tile(), boxes).astype(np.float64)
    got = free.combine(_tile(), boxes, net)
    assert got == pytest.approx(net * p / (net * p).sum(axis=1, keepdims=True), abs=1e-6)
    assert got[0].argmax() == 1 and got[0].max() > 0.9   # surer than the network's 0.4: named
    # class 2 unfitted: the profile's strong preference for class 1 no longer outweighs it
    partly = box_profile.ProfileClassifier({**_value(3, 1), "cap_at_network": False,
                                            "fitted": [True, True, False]}, 3, DB)
    got2 = partly.combine(_tile(), boxes, net)
    q = p.copy()
    q[:, :2] /= q[:, :2].sum(axis=1, keepdims=True)
    q[:, 2] = 0.5
    assert got2 == pytest.approx(net * q / (net * q).sum(axis=1, keepdims=True), abs=1e-6)
    assert got[1].argmax() == 1 and got2[1].argmax() == 2
    # the capped default is unchanged by it
    capped = box_profile.ProfileClassifier(_value(3, 1), 3, DB).combine(_tile(), boxes, net)
    assert (capped.max(axis=1) <= net.max(axis=1) + 1e-6).all()


# ---------------------------------------------------------------- the card and the commands
def test_bad_profile_classifier_values_are_refused_with_what_is_wrong():
    good = _value(3, 0)
    box_profile.check_profile_classifier(good, 3)
    with pytest.raises(box_profile.ProfileError, match=r"w2 has shape \[4, 3\], not \[4, 2\]"):
        box_profile.check_profile_classifier(good, 2)
    with pytest.raises(box_profile.ProfileError, match="features 'box_profile/0' is not 'box_profile/1'"):
        box_profile.check_profile_classifier({**good, "features": "box_profile/0"}, 3)
    with pytest.raises(box_profile.ProfileError, match="lacks 'b1'"):
        box_profile.check_profile_classifier({k: v for k, v in good.items() if k != "b1"}, 3)
    with pytest.raises(box_profile.ProfileError, match="std must be positive"):
        box_profile.check_profile_classifier({**good, "std": [0.0] * box_profile.N_FEATURES}, 3)
    with pytest.raises(box_profile.ProfileError, match="profile_classifier.mean is not a number array"):
        box_profile.check_profile_classifier({**good, "mean": "zeros"}, 3)
    with pytest.raises(box_profile.ProfileError, match="weight -1.0 must be >= 0"):
        box_profile.check_profile_classifier({**good, "weight": -1}, 3)
    with pytest.raises(box_profile.ProfileError, match="cap_at_network 'no' must be true or false"):
        box_profile.check_profile_classifier({**good, "cap_at_network": "no"}, 3)
    for fitted in ([True, False], [False, False, False], [1, 1, 1], "all"):
        with pytest.raises(box_profile.ProfileError, match="must be a list of 3 true/false values"):
            box_profile.check_profile_classifier({**good, "fitted": fitted}, 3)


@pytest.mark.timeout(900)
def test_run_fits_it_the_detector_uses_it_and_the_profile_command_adds_and_removes_it(tmp_path):
    """`rfdetect-train run` fits the profile classifier on its training tiles (not its validation
    tiles) and the Detector loads it; `--no-profile` leaves it out; `rfdetect-train profile`
    writes the same value into that model's card and `--remove` takes it out; a bad card value
    is one error when loading; tiles of other settings are refused."""
    from gnuradio.rfdetect.inference.model_runtime import ModelError, load_model
    rec = tmp_path / "rec"
    synth_dataset(rec, n=6, seed=23, sample_rate=RATE, duration=0.3, snr_db=(10.0, 20.0), n_signals=8,
                  classes=("ofdm", "rb", "tone"))
    common = ["--data", str(rec), *SMALL_ARGS, "--epochs", "2", "--k-folds", "0", "--batch-size", "4", "--quiet",
              "--no-engine", "--no-torch"]
    run_cli("run", "--out", tmp_path / "m", *common, prog="rfdetect-train", timeout=800)
    card = json.loads((tmp_path / "m" / "model.card.json").read_text())
    value = card["profile_classifier"]
    train = json.loads((tmp_path / "m" / "work" / "runs" / "train.json").read_text())
    ds = load_dataset(tmp_path / "m" / "work" / "tiles")
    n_boxes = sum(len(json.loads((tmp_path / "m" / "work" / "tiles" / "tiles" / im.replace(".png", ".json"))
                                 .read_text())["bboxes"]) for im in train["train_tiles"])
    n_val = sum(len(json.loads((tmp_path / "m" / "work" / "tiles" / "tiles" / im.replace(".png", ".json"))
                               .read_text())["bboxes"]) for im in train["val_tiles"])
    assert value["fit"]["boxes"] == n_boxes > 0 and n_val > 0   # the training tiles' boxes, not the validation's
    m = load_model(str(tmp_path / "m"), ds["params"], ds["tile_height"])
    assert m.profile is not None and m.profile.p["w2"].shape[1] == len(card["labels"])
    run_cli("run", "--out", tmp_path / "n", *common, "--no-profile", prog="rfdetect-train", timeout=800)
    assert "profile_classifier" not in json.loads((tmp_path / "n" / "model.card.json").read_text())
    assert load_model(str(tmp_path / "n"), ds["params"], ds["tile_height"]).profile is None
    # the command: the same fit for the same tiles and seed, then out again
    run_cli("profile", "--model", tmp_path / "n", "--quiet", prog="rfdetect-train")
    added = json.loads((tmp_path / "n" / "model.card.json").read_text())["profile_classifier"]
    assert added["w1"] == value["w1"] and added["fit"]["command"].startswith("rfdetect-train profile")
    run_cli("profile", "--model", tmp_path / "n", "--remove", prog="rfdetect-train")
    assert "profile_classifier" not in json.loads((tmp_path / "n" / "model.card.json").read_text())
    # export from the checkpoint takes the run's classifier only when told where it is
    ck = tmp_path / "m" / "work" / "runs" / "final" / "best.pt"
    exp = ["export", "--tiles", tmp_path / "m" / "work" / "tiles", "--checkpoint", ck, "--no-engine", "--no-torch"]
    run_cli(*exp, "--out", tmp_path / "e", "--profile-from", tmp_path / "m", prog="rfdetect-train", timeout=300)
    assert json.loads((tmp_path / "e" / "model.card.json").read_text())["profile_classifier"]["w1"] == value["w1"]
    run_cli(*exp, "--out", tmp_path / "f", prog="rfdetect-train", timeout=300)
    assert "profile_classifier" not in json.loads((tmp_path / "f" / "model.card.json").read_text())
    bad = run_cli(*exp, "--out", tmp_path / "g", "--profile-from", tmp_path / "f", prog="rfdetect-train",
                  check=False, timeout=300)
    assert bad.returncode != 0 and bad.stderr.count("error:") == 1 and "has no profile_classifier" in bad.stderr
    assert not (tmp_path / "g" / "model.onnx").exists()
    # nor from a model of other labels (here the same ones in another order: the arrays would fit)
    other = tmp_path / "other_labels"
    other.mkdir()
    (other / "model.card.json").write_text(json.dumps({**card, "labels": card["labels"][::-1]}))
    bad = run_cli(*exp, "--out", tmp_path / "h", "--profile-from", other / "model.card.json", prog="rfdetect-train",
                  check=False, timeout=300)
    assert bad.returncode != 0 and bad.stderr.count("error:") == 1 and "are not the checkpoint's" in bad.stderr
    assert not (tmp_path / "h" / "model.onnx").exists()
    # a card whose classifier does not fit its labels
    card["profile_classifier"]["b2"] = card["profile_classifier"]["b2"][:-1]
    (tmp_path / "m" / "model.card.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match=r"profile_classifier.b2 has shape \[2\], not \[3\]"):
        load_model(str(tmp_path / "m"), ds["params"], ds["tile_height"])
    # tiles of another tile height
    other = tmp_path / "other"
    prepare(rec, other, PrepareOptions(SMALL, 64, 8), progress=False)
    bad = run_cli("profile", "--model", tmp_path / "n", "--tiles", other, prog="rfdetect-train", check=False)
    assert bad.returncode != 0 and bad.stderr.count("error:") == 1 and "are not the model's" in bad.stderr
    assert "profile_classifier" not in json.loads((tmp_path / "n" / "model.card.json").read_text())
