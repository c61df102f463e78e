"""The anchor_free detector (training/nets.py AnchorFreeDetector, format anchor_free/1):
target assignment, decoding, the label rule, augmentations, streaming tiles, export,
and that it learns (the seeds' overfit check). Small tiles (128 x 512)."""
import json
from pathlib import Path
import resource

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from conftest import SMALL, TILE
from gnuradio.rfdetect.inference import postprocess
from gnuradio.rfdetect.inference.postprocess import UNKNOWN_LABEL, decode_anchor_free, label_rule

torch = pytest.importorskip("torch")

from rfdetect_training import augment, nets  # noqa: E402
from rfdetect_training.archs import make_arch  # noqa: E402
from rfdetect_training.prepare import PrepareOptions, load_dataset, prepare  # noqa: E402
from rfdetect_training.train import validation_ap  # noqa: E402

SY, SX = nets.AnchorFreeDetector.stride_y, nets.AnchorFreeDetector.stride_x
H, W = TILE["tile_height"], SMALL.width


def _perfect_outputs(boxes, labels, k, h=H, w=W):
    """The outputs a perfect network gives for these boxes (its targets), as anchor_free/1."""
    gh, gw = h // SY, w // SX
    assign = nets.anchor_free_targets(torch.as_tensor(boxes, dtype=torch.float32), gh, gw, SY, SX).numpy()
    obj = np.zeros((1, 1, gh, gw), np.float32)
    probs = np.full((1, k, gh, gw), 1.0 / k, np.float32)
    out = np.zeros((1, 4, gh, gw), np.float32)
    for i, j in zip(*np.nonzero(assign >= 0)):
        b = assign[i, j]
        obj[0, 0, i, j] = 0.9
        probs[0, :, i, j] = 0.0
        probs[0, labels[b], i, j] = 1.0
        out[0, :, i, j] = boxes[b]
    return assign, obj, probs, out


def test_thin_and_adjacent_boxes_each_get_cells_and_decode_back():
    boxes = np.array([
        [100.0, 4.0, 101.0, 124.0],    # a tone one column wide, almost the whole tile tall
        [200.0, 40.0, 400.0, 43.0],    # two bursts of one emitter, 3 rows tall, 2 rows apart
        [200.0, 45.0, 400.0, 48.0],
        [30.0, 60.0, 31.5, 62.0],      # a blip thinner than a cell both ways
        [20.0, 10.0, 90.0, 120.0],     # a big box around the blip: the smaller one keeps its cell
    ], np.float32)
    labels = np.array([0, 1, 1, 2, 0])
    assign, obj, probs, out = _perfect_outputs(boxes, labels, 3)
    for k in range(len(boxes)):
        assert (assign == k).sum() >= 1, f"box {k} has no positive cell"
    got, scores, labs = decode_anchor_free(obj, probs, out, 0.5, 0.5)
    iou = postprocess.box_iou_matrix(boxes, got)
    assert len(got) == len(boxes)
    assert (iou.max(axis=1) > 0.99).all()
    assert sorted(labs.tolist()) == sorted(labels.tolist())


def test_tall_boxes_get_a_column_of_positive_cells():
    assign = nets.anchor_free_targets(torch.tensor([[50.0, 0.0, 52.0, 128.0]]), H // SY, W // SX, SY, SX)
    rows = torch.nonzero(assign == 0)[:, 0]
    assert len(rows) >= 0.4 * (H // SY)  # the centre half of the box's rows


def test_label_rule_reports_an_uncertain_class_as_signal():
    obj = np.array([0.9, 0.8])
    probs = np.array([[0.3, 0.35, 0.35], [0.05, 0.9, 0.05]])
    scores, labels = label_rule(obj, probs, 0.5)
    assert labels.tolist() == [UNKNOWN_LABEL, 1]
    assert scores[0] == pytest.approx(0.9) and scores[1] == pytest.approx(0.8 * 0.9)
    # 60 classes, none sure: the signal is still reported, with its objectness
    many = np.full((1, 60), 1 / 60)
    s, lab = label_rule(np.array([0.7]), many, 0.5)
    assert lab.tolist() == [UNKNOWN_LABEL] and s[0] == pytest.approx(0.7)
    # score rule "objectness": the same labels, every score the objectness
    scores, labels = label_rule(obj, probs, 0.5, "objectness")
    assert labels.tolist() == [UNKNOWN_LABEL, 1]
    assert scores.tolist() == pytest.approx([0.9, 0.8])


def test_the_score_rule_decides_which_of_two_boxes_nms_keeps():
    """Two cells boxing one signal, A better localised and named, B unnamed: objectness x
    probability keeps B (0.9 x 0.6 < 0.8), objectness alone keeps A."""
    h, w = H // SY, W // SX
    obj = np.zeros((1, 1, h, w), np.float32)
    probs = np.full((1, 3, h, w), 1 / 3, np.float32)
    boxes = np.zeros((1, 4, h, w), np.float32)
    for (r, c), o, p, box in (((5, 5), 0.9, (0.2, 0.6, 0.2), (40, 20, 60, 80)),
                              ((6, 5), 0.8, (0.34, 0.33, 0.33), (41, 22, 61, 82))):
        obj[0, 0, r, c] = o
        probs[0, :, r, c] = p
        boxes[0, :, r, c] = box
    b, s, lab = decode_anchor_free(obj, probs, boxes, 0.5, 0.5, 0.5)
    assert lab.tolist() == [UNKNOWN_LABEL] and s[0] == pytest.approx(0.8)
    assert b.tolist() == [[41, 22, 61, 82]]
    b, s, lab = decode_anchor_free(obj, probs, boxes, 0.5, 0.5, 0.5, score_rule="objectness")
    assert lab.tolist() == [1] and s[0] == pytest.approx(0.9)
    assert b.tolist() == [[40, 20, 60, 80]]
    with pytest.raises(ValueError, match="label_rule.score 'probability'"):
        decode_anchor_free(obj, probs, boxes, 0.5, 0.5, 0.5, score_rule="probability")



def test_the_class_region_names_a_box_from_its_centre_not_from_the_cell_that_gave_it():
    """A wide box given by a cell near its left edge, which leans to class 0; the cells
    in the box's central half say class 1. Class region 0 names it from its own cell
    (class 0), 0.5 from the objectness-weighted centre (class 1), scored with the
    winning cell's objectness x that probability. Cells outside the central half, and
    outside the box, do not vote."""
    h, w = H // SY, W // SX
    obj = np.zeros((1, 1, h, w), np.float32)
    probs = np.full((1, 3, h, w), 1 / 3, np.float32)
    boxes = np.zeros((1, 4, h, w), np.float32)
    box = (2 * SX, 2 * SY, 10 * SX, 10 * SY)  # cells 2..9 on each axis; central half: 4..7
    obj[0, 0, 6, 2] = 0.9
    probs[0, :, 6, 2] = (0.7, 0.2, 0.1)
    boxes[0, :, 6, 2] = box
    obj[0, 0, 4:8, 4:8] = 0.3  # below the threshold: they vote, they give no box of their own
    probs[0, :, 4:8, 4:8] = np.array([0.05, 0.9, 0.05])[:, None, None]
    obj[0, 0, 3, 9] = 0.45  # inside the box, outside its central half: ignored
    probs[0, :, 3, 9] = (1.0, 0.0, 0.0)
    obj[0, 0, 20, 20] = 0.45  # outside the box
    probs[0, :, 20, 20] = (1.0, 0.0, 0.0)
    b, s, lab = decode_anchor_free(obj, probs, boxes, 0.5, 0.5, 0.5)
    assert lab.tolist() == [0] and s[0] == pytest.approx(0.9 * 0.7)
    b, s, lab = decode_anchor_free(obj, probs, boxes, 0.5, 0.5, 0.5, class_region=0.5, strides=(SY, SX))
    # the voters: the winning cell itself is not in the central half; 16 cells of 0.3
    assert b.tolist() == [list(map(float, box))] and lab.tolist() == [1]
    assert s[0] == pytest.approx(0.9 * 0.9, rel=1e-5)
    # the whole box (region 1): the edge cells vote too, weighted by their objectness
    p1 = postprocess.box_class_probs(obj[0, 0], probs[0], np.array([box], np.float32), SY, SX, 1.0)[0]
    votes = [(0.9, (0.7, 0.2, 0.1)), (0.45, (1.0, 0.0, 0.0))] + [(0.3, (0.05, 0.9, 0.05))] * 16
    expect = sum(o * np.array(p) for o, p in votes) / sum(o for o, _ in votes)
    assert p1 == pytest.approx(expect, rel=1e-5)
    # the threshold applies to the final score: a box named with little confidence drops
    _, s, lab = decode_anchor_free(obj, probs, boxes, 0.85, 0.5, 0.5, class_region=0.5, strides=(SY, SX))
    assert len(s) == 0
    with pytest.raises(ValueError, match="needs the cells' strides"):
        decode_anchor_free(obj, probs, boxes, 0.5, 0.5, 0.5, class_region=0.5)
    for bad in (1.5, -0.1, "half", None):
        with pytest.raises(ValueError, match=r"label_rule.class_region .* is not a number in \[0, 1\]"):
            postprocess.check_class_region(bad)



def test_the_per_box_class_loss_is_the_cross_entropy_of_each_signals_mean_probability():
    """class_per_box: one term per signal, -log of its mean class probability over its
    positive cells, averaged over signals; the per-cell loss averages -log p over cells.
    Trained models use the first (archs.AnchorFree.class_loss)."""
    h, w = 16, 16
    obj = torch.full((1, 1, h, w), -5.0)
    pred = torch.zeros((1, 4, h, w))
    gt = [torch.tensor([[8.0, 8.0, 72.0, 40.0], [100.0, 20.0, 116.0, 28.0]])]
    lab = [torch.tensor([1, 2])]
    assign = nets.anchor_free_targets(gt[0], h, w, 4, 8)
    cls = torch.zeros((1, 3, h, w))
    first = torch.nonzero(assign == 0)
    assert len(first) >= 2 and (assign == 1).sum() >= 1
    centre = first[len(first) // 2]
    cls[0, 1, centre[0], centre[1]] = 6.0  # the centre cell is sure of class 1; the others are at 1/3
    cls.requires_grad_(True)

    def parts(per_box):
        total = nets.anchor_free_loss(obj, cls, pred, gt, lab, 4, 8, class_per_box=per_box)
        rest = nets.anchor_free_loss(obj, torch.zeros_like(cls), pred, gt, lab, 4, 8, class_per_box=per_box)
        return total, rest

    p = torch.softmax(cls.detach()[0], dim=0)
    mean0 = p[:, first[:, 0], first[:, 1]].mean(dim=1)[1]
    cells1 = torch.nonzero(assign == 1)
    mean1 = p[:, cells1[:, 0], cells1[:, 1]].mean(dim=1)[2]
    want_box = float(-(torch.log(mean0) + torch.log(mean1)) / 2)
    n_pos = len(first) + len(cells1)
    ce = -torch.log(p[1, first[:, 0], first[:, 1]]).sum() - torch.log(p[2, cells1[:, 0], cells1[:, 1]]).sum()
    want_cell = float(ce / n_pos)
    (box_total, zero_cls_box), (cell_total, zero_cls_cell) = parts(True), parts(False)
    # the other terms do not depend on the class logits: uniform logits give class loss log(3)
    assert float(box_total - zero_cls_box) == pytest.approx(want_box - np.log(3), abs=1e-4)
    assert float(cell_total - zero_cls_cell) == pytest.approx(want_cell - np.log(3), abs=1e-4)
    assert abs(want_box - want_cell) > 1e-3  # the two rules differ on this case
    box_total.backward()
    assert cls.grad is not None and torch.isfinite(cls.grad).all()


# ---------------------------------------------------------------- augmentations
def _painted(boxes, h=H, w=W):
    """A tile whose pixels are 0.9 inside integer boxes and 0.1 elsewhere."""
    t = np.full((h, w), 0.1, np.float32)
    for x0, y0, x1, y1 in boxes:
        t[int(y0):int(y1), int(x0):int(x1)] = 0.9
    return t


_box = st.tuples(st.integers(0, W - 8), st.integers(0, H - 8), st.integers(2, 60), st.integers(2, 60)).map(
    lambda b: (b[0], b[1], min(W, b[0] + b[2]), min(H, b[1] + b[3])))


def _pixels_follow(tile, boxes):
    for x0, y0, x1, y1 in np.round(boxes).astype(int):
        assert x1 > x0 and y1 > y0
        assert (tile[y0:y1, x0:x1] == np.float32(0.9)).all()


@settings(max_examples=40, deadline=None)
@given(st.lists(_box, min_size=1, max_size=5), st.sampled_from(["flip", "roll_f", "roll_t"]), st.integers(0, 10 ** 6))
def test_geometric_augmentations_move_boxes_with_the_pixels(boxes, name, seed):
    b = np.array(boxes, np.float32)
    tile = _painted(b)
    out, nb, nl = augment._FUNCS[name](tile, b, np.arange(len(b)), np.random.default_rng(seed), 60.0)
    assert len(nb) >= len(b) and len(nb) == len(nl)
    _pixels_follow(out, nb)
    assert np.isclose((out == np.float32(0.9)).sum(), (tile == np.float32(0.9)).sum())


@settings(max_examples=40, deadline=None)
@given(st.lists(_box, min_size=1, max_size=5), st.integers(0, 10 ** 6))
def test_zoom_moves_boxes_with_the_pixels_and_fills_with_noise(boxes, seed):
    b = np.array(boxes, np.float32)
    tile = _painted(b)
    out, nb, nl = augment.zoom(tile, b, np.arange(len(b)), np.random.default_rng(seed), 60.0)
    assert out.shape == tile.shape and len(nb) == len(nl) and len(nb) <= len(b)
    assert set(np.unique(out).tolist()) <= {np.float32(0.1), np.float32(0.9)}  # no new values: nearest pixel
    _pixels_follow(out, nb)
    # every bright pixel belongs to a box (a stretched/shrunk one, or one cut at the edge and dropped)
    covered = np.zeros_like(out, dtype=bool)
    for x0, y0, x1, y1 in np.round(nb).astype(int):
        covered[y0:y1, x0:x1] = True
    if len(nb) == len(b):
        assert not ((out == np.float32(0.9)) & ~covered).any()


def test_zoom_spans_both_directions_and_keeps_thin_signals():
    b = np.array([[100, 0, 101, H], [20, 30, 80, 60]], np.float32)  # a 1-column tone and a burst
    tile = _painted(b)
    heights, tones = [], 0
    for seed in range(60):
        out, nb, nl = augment.zoom(tile, b, np.arange(2), np.random.default_rng(seed), 60.0)
        tone = nb[nl == 0]  # absent when a stretch crops it out
        tones += len(tone)
        assert all(t[2] - t[0] >= 1.0 for t in tone)  # never shrunk below a column
        burst = nb[nl == 1]
        if len(burst) and burst[0, 1] > 0 and burst[0, 3] < H:
            heights.append(burst[0, 3] - burst[0, 1])
    assert tones >= 20 and min(heights) < 25 and max(heights) > 40  # shrunk and stretched (30 rows before)


@settings(max_examples=25, deadline=None)
@given(st.lists(_box, min_size=1, max_size=3), st.integers(0, 10 ** 6))
def test_paste_adds_the_donors_boxes_with_their_pixels(boxes, seed):
    donor_boxes = np.array(boxes, np.float32)
    donor = (_painted(donor_boxes), donor_boxes, np.arange(len(donor_boxes)) + 10)
    tile = np.full((H, W), 0.1, np.float32)
    out, nb, nl = augment.paste(tile, np.zeros((0, 4), np.float32), np.zeros(0, np.int64),
                                np.random.default_rng(seed), 60.0, donor)
    assert 1 <= len(nb) <= 3 and set(nl.tolist()) <= set(donor[2].tolist())
    _pixels_follow(out, nb)


def test_photometric_augmentations_keep_boxes_and_range():
    b = np.array([[10, 10, 60, 40]], np.float32)
    tile = _painted(b)
    rng = np.random.default_rng(0)
    for name in ("gain", "floor", "artefacts"):
        out, nb, _ = augment._FUNCS[name](tile, b, np.zeros(1, np.int64), rng, 60.0)
        assert np.array_equal(nb, b) and 0.0 <= out.min() and out.max() <= 1.0 and out.shape == tile.shape
    out, _, _ = augment.gain(tile, b, np.zeros(1), np.random.default_rng(3), 60.0)
    assert np.allclose(out[tile == np.float32(0.1)], 0.1)  # the floor stays where it is
    assert not np.allclose(out[10:40, 10:60], 0.9)         # the signal moved


def test_parse_augment_names_the_unknown():
    assert augment.parse_augment("none") == () and augment.parse_augment("all") == augment.AUGMENTATIONS
    with pytest.raises(ValueError, match="rotate"):
        augment.parse_augment("flip,rotate")


# ---------------------------------------------------------------- learning and export
@pytest.fixture(scope="module")
def small_tiles(synth_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("af") / "tiles"
    prepare(synth_dir, out, PrepareOptions(SMALL, TILE["tile_height"], TILE["overlap"]), progress=False)
    return load_dataset(out)


@pytest.fixture(scope="module")
def overfit(small_tiles):
    """anchor_free trained 120 steps on six tiles -> (arch, model, those tiles)."""
    ds = small_tiles
    from rfdetect_training.prepare import load_entry
    images = [im for im in ds["images"] if load_entry(ds, im)["bboxes"]][:6]
    assert len(images) == 6
    torch.manual_seed(0)
    arch = make_arch("anchor_free", ds["labels"], None, ds["params"], ds["tile_height"])
    model = arch.build()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    data = arch.dataset(ds, images)
    batch = arch.collate([data[i] for i in range(len(data))])
    for _ in range(120):
        model.train()
        loss = arch.loss(model, batch, "cpu")
        opt.zero_grad()
        loss.backward()
        opt.step()
    return arch, model.eval(), images


@pytest.mark.timeout(900)  # ~20 s on an idle 2-core machine; minutes when the CPU is shared
def test_overfits_a_few_tiles(overfit, small_tiles):
    """The seeds' sanity check: a detector that cannot overfit six tiles cannot learn."""
    arch, model, images = overfit
    r = validation_ap(arch, model, "cpu", small_tiles, images)
    assert r["class_agnostic_AP"] >= 0.9 and r["mAP"] >= 0.9, r


def test_validation_scores_and_loss_come_from_one_pass(overfit, small_tiles):
    """Training validates with one forward pass per tile: the same AP as predict() gives,
    and the mean over tiles of the training loss of each tile alone; a channels-last copy
    of the model (how training runs on the CPU) scores the same."""
    arch, model, images = overfit
    plain = validation_ap(arch, model, "cpu", small_tiles, images)
    joint = validation_ap(arch, model, "cpu", small_tiles, images, with_loss=True)
    assert "loss" not in plain and joint["class_agnostic_AP"] == plain["class_agnostic_AP"] >= 0.9
    assert joint["mAP"] == plain["mAP"] and joint["best_f1_threshold"] == plain["best_f1_threshold"]
    data = arch.dataset(small_tiles, images)
    with torch.no_grad():
        per_tile = [float(arch.loss(model, arch.collate([data[i]]), "cpu")) for i in range(len(data))]
    assert joint["loss"] == pytest.approx(np.mean(per_tile), rel=1e-5) and joint["loss"] > 0
    import copy
    nhwc = copy.deepcopy(model).to(memory_format=torch.channels_last)
    assert nhwc.stem[1][0].weight.is_contiguous(memory_format=torch.channels_last)
    again = validation_ap(arch, nhwc, "cpu", small_tiles, images, with_loss=True)
    assert again["class_agnostic_AP"] == pytest.approx(plain["class_agnostic_AP"], abs=0.02)
    assert again["loss"] == pytest.approx(joint["loss"], rel=1e-3)


def test_class_confidence_choice_follows_class_certainty(overfit, small_tiles):
    """--class-confidence auto: with confident classes every choice names alike, the best
    wins and the largest of those tied with it; with the class head tempered until the best
    probability is under 0.5, 0.5 names nothing (mAP 0) and a lower choice that names the
    signals is taken. (Confident choices still differ a little in class-agnostic AP: a box
    left unnamed scores its objectness, and the NMS after refine_edges keeps by score.)"""
    import copy

    from rfdetect_training.train import CLASS_CONFIDENCE_CHOICES, choose_class_confidence
    arch, model, images = overfit
    best, tried = choose_class_confidence(arch, model, "cpu", small_tiles, images)
    assert set(tried) == set(CLASS_CONFIDENCE_CHOICES) and arch.class_confidence == 0.5
    assert tried[0.5]["mAP"] >= 0.9 and len({r["mAP"] for r in tried.values()}) == 1
    assert tried[best]["select"] == max(r["select"] for r in tried.values())
    unsure = copy.deepcopy(model)
    with torch.no_grad():
        unsure.cls.weight.mul_(0.02)
        unsure.cls.bias.mul_(0.02)
    best, tried = choose_class_confidence(arch, unsure, "cpu", small_tiles, images)
    assert tried[0.5]["mAP"] == 0.0 and best < 0.5 and tried[best]["mAP"] > 0.5, {c: r["mAP"] for c, r in tried.items()}


def test_export_has_static_shapes_no_nms_and_the_detector_gets_what_pytorch_gets(small_tiles, tmp_path):
    import onnx

    from gnuradio.rfdetect.inference.model_runtime import load_model
    from rfdetect_training.archs import load_tile
    from rfdetect_training.export import export_onnx
    ds = small_tiles
    torch.manual_seed(1)
    arch = make_arch("anchor_free", ds["labels"], None, ds["params"], ds["tile_height"])
    model = arch.build().eval()
    with torch.no_grad():  # an untrained head scores nothing and boxes alike: spread both out
        model.obj.bias.fill_(1.0)
        torch.nn.init.normal_(model.obj.weight, std=0.5)
        torch.nn.init.normal_(model.box.weight, std=0.05)
    path = export_onnx(arch, model, ds, tmp_path, {}, 0.3)  # raises when ONNX and PyTorch differ
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert not ops & {"NonMaxSuppression", "TopK", "NonZero", "Loop", "If", "Scan"}, ops
    assert "Softmax" not in ops  # written out (archs.channel_softmax): ORT's transposes cost 8 ms a tile
    card = json.loads(path.with_name("model.card.json").read_text())
    assert card["output"]["format"] == "anchor_free/1" and card["unknown_label"] == "signal"
    m = load_model(str(path), ds["params"], ds["tile_height"])
    tile, _, _ = load_tile(ds, ds["images"][0])
    found = m.detect(tile)
    pb, ps, pl = arch.predict(model, tile, "cpu", score_threshold=0.3)
    assert len(found) == len(pb) > 0
    got = np.array([[b.x0, b.y0, b.x1, b.y1] for b in found])
    assert postprocess.box_iou_matrix(pb, got).max(axis=1).min() > 0.999


def test_an_exported_model_comes_back_as_its_network_for_fine_tuning(overfit, small_tiles, tmp_path):
    """--init MODEL.onnx: the export's folded weights go back into the training network.
    Eval mode gives the export's outputs; BatchNorm is calibrated so that training mode, on
    a batch of the calibration tiles, gives them too; the class head follows the labels by
    name (a label the model does not know starts fresh); other spectrogram settings or another architecture are one
    error each, except another resolution when it is asked for."""
    import dataclasses

    from rfdetect_training.archs import _AnchorFreeExport, load_tile
    from rfdetect_training.export import export_onnx
    from rfdetect_training.onnx_weights import init_from_export
    arch, model, images = overfit
    ds = small_tiles
    path = export_onnx(arch, model, ds, tmp_path, {}, 0.3)
    tiles = [load_tile(ds, im)[0] for im in images]
    batch = torch.from_numpy(np.stack(tiles))[:, None]
    with torch.no_grad():
        want = [t.numpy() for t in _AnchorFreeExport(model.eval())(batch)]
    back = arch.build()
    line = init_from_export(path, arch, back, tiles)
    assert "every weight;" in line and f"{len(tiles)} training tiles" in line
    bns = [m for m in back.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 30 and max(float(b.running_mean.abs().max()) for b in bns) > 0.01
    assert max(float((b.weight - 1).abs().max()) for b in bns) > 0.01  # calibrated, not the identity
    for mode in ("eval", "train"):
        getattr(back, mode)()
        with torch.no_grad():
            got = [t.numpy() for t in _AnchorFreeExport(back)(batch)]
        for name, w, g in zip(("objectness", "class_probs", "boxes"), want, got):
            tol = {"boxes": 0.05}.get(name, 1e-3)
            assert np.abs(w - g).max() < tol, (mode, name, float(np.abs(w - g).max()))

    # labels in another order, and one the model does not know: the class head follows the names
    labels = list(reversed(ds["labels"])) + ["zz_new"]
    other = make_arch("anchor_free", labels, None, ds["params"], ds["tile_height"])
    fresh = other.build()
    new_row = fresh.cls.weight[-1].clone()
    line = init_from_export(path, other, fresh, tiles)
    assert "class head's rows for ['zz_new'], which the model does not know" in line
    assert torch.equal(fresh.box.weight, back.box.weight) and torch.equal(fresh.c4[0][0].weight, back.c4[0][0].weight)
    k = len(ds["labels"])
    assert torch.equal(fresh.cls.weight[:k], back.cls.weight.flip(0)) and torch.equal(fresh.cls.bias[:k], back.cls.bias.flip(0))
    assert torch.equal(fresh.cls.weight[-1], new_row)  # its fresh initialisation, untouched

    coarser = make_arch("anchor_free", ds["labels"], None, dataclasses.replace(ds["params"], hop=ds["params"].hop * 2),
                        ds["tile_height"])
    with pytest.raises(ValueError, match="other spectrogram settings than these tiles.*hop.*--init-other-resolution"):
        init_from_export(path, coarser, coarser.build(), tiles)
    # --init-other-resolution: the same weights start a run at another time grid, and say so
    regridded = coarser.build()
    line = init_from_export(path, coarser, regridded, tiles, other_resolution=True)
    assert f"made at another resolution (hop: {ds['params'].hop} != {ds['params'].hop * 2})" in line
    assert torch.equal(regridded.c4[0][0].weight, back.c4[0][0].weight)
    # but never another dB scale: the pixels would mean something else
    rescaled = make_arch("anchor_free", ds["labels"], None,
                         dataclasses.replace(ds["params"], hop=ds["params"].hop * 2, db_high=ds["params"].db_high + 10),
                         ds["tile_height"])
    with pytest.raises(ValueError, match=r"settings than these tiles \(db_high: [^;]*\): prepare") as err:
        init_from_export(path, rescaled, rescaled.build(), tiles, other_resolution=True)
    assert "--init-other-resolution" not in str(err.value)
    dense = make_arch("dense", ds["labels"], "tiny", ds["params"], ds["tile_height"])
    with pytest.raises(ValueError, match="only an anchor_free run"):
        init_from_export(path, dense, dense.build(), tiles)


def test_channel_softmax_is_softmax_and_safe_for_large_logits():
    from rfdetect_training.archs import channel_softmax
    x = torch.randn(2, 7, 5, 3) * 30
    x[0, :, 0, 0] = 1e4  # exp() of these overflows without the max subtracted
    got = channel_softmax(x)
    assert torch.isfinite(got).all()
    assert torch.allclose(got, torch.softmax(x, dim=1), atol=1e-6)


def test_tiles_stream_from_disk_in_bounded_memory(tmp_path):
    """2,400 tiles through the training loader: memory must not grow with them (the
    old TileSet held every tile: 2,400 x 256 KB = 600 MB)."""
    from rfdetect_training.archs import TileSet
    from gnuradio.rfdetect.formats.tile_io import write_tile_png
    n = 2400
    root = tmp_path / "ds"
    (root / "tiles").mkdir(parents=True)
    rng = np.random.default_rng(0)
    base = rng.random((H, W), dtype=np.float32)
    images = []
    for i in range(n):
        im = f"rec_{i:05d}.png"
        write_tile_png(root / "tiles" / im, np.roll(base, i, axis=1))
        (root / "tiles" / im.replace(".png", ".json")).write_text(json.dumps(
            {"image": im, "width": W, "height": H, "source": {"recording": "x"},
             "bboxes": [{"label": "a", "x_min": 10, "y_min": 10, "x_max": 40, "y_max": 30}]}))
        images.append(im)
    ds = {"root": str(root), "images": images, "labels": ["a"], "params": SMALL, "tile_height": H,
          "overlap": TILE["overlap"]}
    data = TileSet(ds, images, augment=augment.AUGMENTATIONS)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    held = []
    for i in range(n):
        tile, boxes, labels = data[i]
        held.append(float(tile.mean()))  # use it, keep nothing of it
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert len(held) == n
    assert grown_mb < 100, f"peak memory grew {grown_mb:.0f} MB over {n} tiles"


def test_containment_nms_drops_fragments_but_keeps_neighbours():
    boxes = np.array([[100, 100, 300, 400],   # a signal
                      [120, 150, 200, 250],   # a fragment of it: IoU 0.13, but wholly inside
                      [310, 100, 500, 400]],  # its neighbour, touching nothing
                     np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    labels = np.zeros(3, np.int64)
    assert sorted(postprocess.nms(boxes, scores, labels, 0.5).tolist()) == [0, 1, 2]
    assert sorted(postprocess.nms(boxes, scores, labels, 0.5, contained=0.6).tolist()) == [0, 2]


def test_the_last_partial_tile_mirrors_its_rows_and_keeps_its_geometry():
    from gnuradio.rfdetect.inference.tile_detector import TileAssembler
    a = TileAssembler(8, 2, 2)
    rows = np.arange(26, dtype=np.float32).reshape(13, 2) + 1.0  # no zero row
    full = a.push(rows)
    tile, row_start, valid = a.flush()
    assert [r for _, r in full] == [0] and (row_start, valid) == (6, 7)  # same tile grid as before
    assert (tile[:7] == rows[6:13]).all()
    assert (tile[7] == rows[12]).all() and tile.min() > 0  # mirrored, no zero edge
    short = TileAssembler(8, 2, 2)
    short.push(rows[:3])
    tile, row_start, valid = short.flush()
    assert (row_start, valid) == (0, 3) and (tile[:, 0] == rows[[0, 1, 2, 2, 1, 0, 0, 1], 0]).all()


def test_same_band_merge_joins_stacked_pieces_but_not_bursts_rows_apart():
    boxes = np.array([[100, 100, 200, 300],   # a tall signal boxed as three overlapping pieces
                      [105, 280, 198, 500],
                      [98, 490, 202, 700],
                      [100, 699, 200, 740],   # a burst of the same emitter 2 rows after it, its box 1 row early
                      [400, 150, 600, 450],   # a wide signal overlapping the first in time only
                      [420, 440, 520, 460]],  # overlaps the wide one, but in half its band
                     np.float32)
    scores = np.array([0.5, 0.9, 0.4, 0.8, 0.7, 0.6], np.float32)
    labels = np.array([UNKNOWN_LABEL, UNKNOWN_LABEL, 3, 2, 1, 1], np.int64)
    b, s, lab = postprocess.merge_same_band(boxes, scores, labels, 0.7)
    assert len(b) == 4 and list(s) == sorted(s, reverse=True)
    tall = b[np.isclose(s, 0.9)][0]
    assert tall.tolist() == [98, 100, 202, 700] and lab[np.isclose(s, 0.9)][0] == 3  # the known label
    assert [98, 100, 202, 700] not in b[~np.isclose(s, 0.9)].tolist()
    assert [100, 699, 200, 740] in b.tolist() and [420, 440, 520, 460] in b.tolist()
    # off: nothing changes
    assert len(decode_anchor_free(*_one_cell_outputs(boxes, scores), 0.1, 0.5, merge_band_iou=0.0)[0]) == 6
    assert len(decode_anchor_free(*_one_cell_outputs(boxes, scores), 0.1, 0.5, merge_band_iou=0.7)[0]) == 4


def _one_cell_outputs(boxes, scores):
    """anchor_free/1 outputs with one cell per box (objectness = score, class 0 certain)."""
    n = len(boxes)
    obj = scores.reshape(1, 1, 1, n).astype(np.float32)
    probs = np.zeros((1, 4, 1, n), np.float32)
    probs[0, 0] = 1.0
    return obj, probs, boxes.T.reshape(1, 4, 1, n).astype(np.float32)


def test_class_aware_merge_treats_signal_as_any_label():
    from gnuradio.rfdetect.tracking.nms_merge import NmsMerger

    def rec(label, score, f0=1e6, f1=2e6):
        return {"t_start": 0.0, "t_stop": 0.01, "f_low": f0, "f_high": f1, "label": label, "score": score,
                "model": "m", "tile": 0, "tile_edge": []}
    m = NmsMerger(0.5, class_aware=True)
    [one] = m.merge([rec("signal", 0.9), rec("chirp", 0.6, 1.05e6, 2.0e6)])
    assert one["label"] == "chirp" and one["score"] == 0.9  # one signal, with the name it was given
    # one model's boxes that agree (IoU 0.95) are one signal named two ways (since session 40)
    [one] = m.merge([rec("ofdm", 0.9), rec("chirp", 0.6, 1.05e6, 2.0e6)])
    assert one["label"] == "ofdm" and one["score"] == 0.9
    # another model's stay apart: two models' scores do not compare
    two = m.merge([rec("ofdm", 0.9), dict(rec("chirp", 0.6, 1.05e6, 2.0e6), model="m2")])
    assert sorted(r["label"] for r in two) == ["chirp", "ofdm"]


def _floor_tile(seed=0, h=256, w=512):
    """A tile at the floor-normalised noise level (0.167 in [0, 1], +-0.05) to draw on."""
    rng = np.random.default_rng(seed)
    return (1 / 6 + 0.05 * rng.standard_normal((h, w))).astype(np.float32)


@pytest.mark.parametrize("frac", [0.1, 0.35])  # the cards' value, and a stricter one
def test_refine_edges_moves_rough_edges_to_the_energy_and_leaves_unclear_boxes(frac):
    t = _floor_tile()
    t[40:60, 100:300] += 0.3               # a wide burst (an OFDM frame)
    t[40:60, 198:200] -= 0.3               # with a DC notch in it
    t[62:70, 100:300] += 0.3               # the next burst, 2 rows after it
    rows = np.arange(100, 200)
    t[rows, 350 + (rows - 100)] += 0.4     # a chirp: one column per row
    t[150:190, 20:60] += 0.02              # a signal hardly above the floor
    t[100:140, 460:500] += 0.3             # a channel, and its neighbour right after it
    t[100:140, 500:512] += 0.2
    boxes = np.array([[70, 35, 340, 61],     # the burst, boxed too wide and a little early
                      [100, 62, 300, 70],    # the next burst, right already
                      [348, 98, 452, 202],   # the chirp, about right
                      [10, 140, 70, 200],    # the faint one
                      [452, 100, 490, 140]], # the channel, boxed too far left and too narrow
                     np.float32)
    out = postprocess.refine_edges(t, boxes, frac)
    assert out[0].tolist() == [100, 40, 300, 60]  # the notch does not split it; the next burst is not joined
    assert out[1].tolist() == [100, 62, 300, 70]
    assert out[2].tolist() == boxes[2].tolist()   # its profiles are mostly floor: nothing clear to snap to
    assert out[3].tolist() == boxes[3].tolist()   # under the contrast: the network's edges stay
    # its left edge moves to the energy; on the right the energy runs on into the neighbour
    # past the search: that edge stays the network's
    assert out[4].tolist() == [460, 100, 490, 140]
    assert postprocess.refine_edges(t, boxes, 0.0).tolist() == boxes.tolist()  # off
    assert postprocess.refine_edges(t, np.zeros((0, 4), np.float32), frac).shape == (0, 4)
    nan_box = np.array([[np.nan, 35, 340, 61]], np.float32)
    assert np.isnan(postprocess.refine_edges(t, nan_box, frac)[0, 0])  # left as it came, no error
    t[0, 0] = np.nan  # a NaN pixel does not switch refinement off
    assert postprocess.refine_edges(t, boxes[:1], frac)[0].tolist() == [100, 40, 300, 60]


def test_refine_boxes_drops_boxes_that_snap_onto_one_signal():
    t = _floor_tile()
    t[40:60, 100:300] += 0.3
    boxes = np.array([[90, 38, 310, 62], [80, 36, 320, 61]], np.float32)  # two rough boxes, one signal
    b, s, lab = postprocess.refine_boxes(t, boxes, np.array([0.5, 0.9], np.float32), np.array([1, 2]), 0.1, 0.5)
    assert b.tolist() == [[100, 40, 300, 60]] and s.tolist() == [pytest.approx(0.9)] and lab.tolist() == [2]


def _default_model_with(tmp_path, **anchor_free):
    """The embedded default model, loaded through a copy of its card with these
    ``anchor_free`` keys set."""
    from gnuradio.rfdetect.inference.model_runtime import load_model
    from gnuradio.rfdetect.dsp.spectrogram import SpectrogramParams
    default = Path(__file__).resolve().parents[1] / "python" / "rfdetect" / "models" / "default"
    d = tmp_path / "_".join(f"{k}{v}" for k, v in anchor_free.items())
    d.mkdir()
    (d / "model.onnx").write_bytes((default / "model.onnx").read_bytes())
    card = json.loads((default / "model.card.json").read_text())
    card["anchor_free"].update(anchor_free)
    (d / "model.card.json").write_text(json.dumps(card))
    return load_model(str(d), SpectrogramParams(), 1024)


def _bursts_tile():
    """A tile with clear wide bursts and a narrow one."""
    t = _floor_tile(1, 1024, 1024)
    t[100:140, 200:600] += 0.4
    t[300:310, 50:90] += 0.4
    t[500:700, 700:720] += 0.4
    return t


def test_refine_edges_is_a_card_option_of_the_detector(tmp_path):
    """anchor_free.refine_edges on a card switches it on in the Detector's model path."""
    models = {v: _default_model_with(tmp_path, refine_edges=v) for v in (0.0, 0.35)}
    assert [m.refine_edges for m in models.values()] == [0.0, 0.35]
    # the boxes with the option on are the boxes without it, refined (the model path calls
    # the shared post-processing)
    t = _bursts_tile()
    off, on = models[0.0].raw(t), models[0.35].raw(t)
    assert len(off[0]) > 0
    m = models[0.35]
    want = postprocess.refine_boxes(t, *off, 0.35, m.card.nms_iou, m.refine_min_rows, m.refine_peak_db,
                                    m.card.spectrogram.db_per_unit)
    assert np.array_equal(on[0], want[0]) and np.array_equal(on[1], want[1])


def test_refine_edges_snaps_short_bursts_in_time_from_min_rows():
    """Boxes under ``min_size`` rows keep the network's time edges unless ``min_rows`` lets
    them snap; then the burst need fill only REFINE_SHORT_FILL of the box's rows (the network
    boxes a 2-3-row burst 5-6 rows tall), the rows its energy leaks into are not the burst,
    and bursts two rows apart still stay apart."""
    t = _floor_tile(2)
    t[50:53, 100:300] += 0.3               # a 3-row burst (a Wi-Fi ACK at 20 MS/s)
    t[[49, 53], 100:300] += 0.06           # leaking into the rows beside it (overlapping windows)
    t[80:82, 100:300] += 0.3               # two 2-row bursts, 2 rows apart
    t[84:86, 100:300] += 0.3
    t[120:123, 100:300] += 0.02            # a short one hardly above the floor
    boxes = np.array([[100, 48, 300, 55],    # 7 rows for 3: the burst fills 3/7 of it
                      [100, 79, 300, 83],    # the first of the pair, a row early
                      [100, 119, 300, 125]],  # the faint one
                     np.float32)
    assert postprocess.refine_edges(t, boxes, 0.1).tolist() == boxes.tolist()  # under 8 rows: as placed
    out = postprocess.refine_edges(t, boxes, 0.1, min_rows=2)
    assert out[0].tolist() == [100, 50, 300, 53]
    assert out[1].tolist() == [100, 80, 300, 82]  # not joined to the burst two rows later
    assert out[2].tolist() == boxes[2].tolist()   # nothing clear to snap to
    # a box of min_size rows or more keeps the stricter fill (half its rows): the burst and the
    # two rows it leaks into, 5 of 16, do not move it
    tall = np.array([[100, 45, 300, 61]], np.float32)
    assert postprocess.refine_edges(t, tall, 0.1, min_rows=2)[0, [1, 3]].tolist() == [45, 61]
    # min_rows above min_size holds back boxes the default would snap
    t = _floor_tile(3)
    t[40:50, 100:300] += 0.3
    long = np.array([[100, 38, 300, 52]], np.float32)
    assert postprocess.refine_edges(t, long, 0.1).tolist() == [[100, 40, 300, 50]]
    assert postprocess.refine_edges(t, long, 0.1, min_rows=16).tolist() == long.tolist()
    for bad in (0, 1.5, -2, "two", None, float("nan"), float("inf"), 10 ** 400, True):
        with pytest.raises(ValueError, match=r"anchor_free.refine_min_rows .* is not a whole number of rows >= 1"):
            postprocess.check_refine_min_rows(bad)
    assert postprocess.check_refine_min_rows(2.0) == 2
    with pytest.raises(ValueError, match="refine_min_rows"):  # the Python API checks it too
        postprocess.refine_edges(t, long, 0.1, min_rows=0)


def test_refine_peak_db_snaps_a_strong_chirp_and_nothing_it_should_not():
    """A strong chirp (one column per row) boxed twice as wide as its band has no clear mean
    profile; with refine_peak_db its box snaps to its brightest pixels. A chirp under twice
    that contrast, a box under REFINE_MIN_SIZE rows, and a weak wide signal with a strong
    narrow one inside (snapping would leave the weak one out) keep the network's columns."""
    t = _floor_tile(4)
    rows = np.arange(60, 160)
    t[rows, 200 + (rows - 60)] += 0.7          # 42 dB over the floor at 60 dB per unit
    weak = np.arange(170, 230)
    t[weak, 20 + (weak - 170)] += 0.3          # 18 dB: over 15, under 2 x 15
    t[15:45, 400:480] += 0.05                  # a weak wide signal (3 dB)
    t[15:45, 430:440] += 0.7                   # and a strong narrow one inside it
    t[200:206, 420:430] += 0.7                 # a strong burst of 6 rows, boxed 7 rows tall
    boxes = np.array([[150, 40, 350, 180],      # the chirp: twice its band, 40 rows too tall
                      [10, 160, 100, 240],      # the weaker chirp, as roughly
                      [390, 12, 490, 48],       # the weak wide signal
                      [410, 199, 440, 206]],    # the short burst, three times its band
                     np.float32)
    plain = postprocess.refine_edges(t, boxes, 0.1, min_rows=2)
    assert plain[0].tolist() == boxes[0].tolist() and plain[1].tolist() == boxes[1].tolist()  # nothing clear
    peak = postprocess.refine_edges(t, boxes, 0.1, min_rows=2, peak_db=15.0, db_per_unit=60.0)
    assert peak[0].tolist() == [200, 60, 300, 160]
    assert peak[1].tolist() == boxes[1].tolist()
    assert peak[2, [0, 2]].tolist() == [390, 490] and peak[3, [0, 2]].tolist() == [410, 440]
    assert np.array_equal(peak[1:], plain[1:])
    # the threshold is in dB: the same tile in plain dB (db_per_unit 1) snaps alike
    assert postprocess.refine_edges(t * 60, boxes[:1] , 0.1, min_rows=2, peak_db=15.0)[0].tolist() == \
        [200, 60, 300, 160]
    # without the check that what a snap leaves out is noise, the weak wide signal's box would
    # shrink to the strong narrow one
    empty, postprocess.PEAK_EMPTY_DB = postprocess.PEAK_EMPTY_DB, 1e9
    try:
        loose = postprocess.refine_edges(t, boxes[2:3], 0.1, min_rows=2, peak_db=15.0, db_per_unit=60.0)
    finally:
        postprocess.PEAK_EMPTY_DB = empty
    assert loose[0, [0, 2]].tolist() == [430, 440]
    for bad in (-1, "x", None, float("nan"), float("inf"), True):
        with pytest.raises(ValueError, match=r"anchor_free.refine_peak_db .* is not a number of dB >= 0"):
            postprocess.check_refine_peak_db(bad)
    with pytest.raises(ValueError, match="db_per_unit"):
        postprocess.refine_edges(t, boxes, 0.1, peak_db=15.0, db_per_unit=0.0)
    assert postprocess.check_refine_peak_db(15) == 15.0


def test_refine_peak_db_grows_a_box_over_part_of_a_chirp_to_the_whole_sweep():
    """A network boxes a stretch of a chirp's sweep (its middle, or two fragments); with
    refine_peak_db the box follows the bright sloped line out to where it ends, so each
    becomes the whole chirp, and refine_boxes keeps one. A tone boxed over part of its
    length, a box holding a whole chirp, and a chirp running into a wide burst (the trace
    stops where the line does) keep what they had without the trace. A line several columns
    wide (a strong chirp's leakage) is followed as one."""
    t = _floor_tile(5)
    rows = np.arange(40, 160)
    t[rows, np.round(100 + 0.8 * (rows - 40)).astype(int)] += 0.6   # 36 dB at 60 dB per unit
    t[30:220, 300] += 0.6                                              # a long tone
    rows2 = np.arange(20, 80)
    t[rows2, np.round(400 + 0.5 * (rows2 - 20)).astype(int)] += 0.6   # a chirp, boxed whole
    rows3 = np.arange(170, 210)
    t[rows3, np.round(20 + 1.0 * (rows3 - 170)).astype(int)] += 0.6   # a chirp ...
    t[210:240, 30:120] += 0.6                                          # ... into a wide burst
    rows5 = np.arange(150, 230)                                        # a chirp of the same slope
    t[rows5, np.round(100 + 0.8 * (rows5 - 40)).astype(int) + 3] += 0.6   # 3 columns beside the first
    rows4 = np.arange(100, 250)
    for d in range(-2, 3):                                             # a strong chirp 5 columns
        t[rows4, np.round(445 + 0.4 * (rows4 - 100)).astype(int) + d] += 0.6   # wide (leakage)
    boxes = np.array([[132, 80, 165, 120],     # the middle third of the first chirp
                      [104, 45, 124, 70],      # and a fragment near its start
                      [296, 80, 305, 120],     # part of the tone
                      [398, 18, 432, 82],      # the second chirp, whole
                      [34, 184, 52, 204],      # the middle of the third
                      [465, 160, 479, 185],    # a sixth of the wide one
                      [205, 180, 230, 205]],   # the middle of the one beside the first
                     np.float32)

    def refine(b, trace=True):
        return postprocess.refine_edges(t, b, 0.1, min_rows=2, peak_db=15.0, db_per_unit=60.0, trace=trace)

    traced, untraced = refine(boxes), refine(boxes, False)
    assert traced[0].tolist() == [100, 40, 196, 160]
    assert traced[1].tolist() == [100, 40, 196, 160]
    assert traced[4].tolist() == [20, 170, 60, 210]     # to the burst's first row, not into it
    assert traced[5].tolist() == [443, 100, 508, 250]   # its width is the line's, not a wide signal
    # two lines side by side stay two boxes: each trace stops where its own line does
    assert traced[0].tolist() == [100, 40, 196, 160] and traced[6].tolist() == [191, 150, 255, 230]
    # a line is followed once: the fragment on the first chirp takes the box its middle got
    follow, calls = postprocess._follow_line, []
    postprocess._follow_line = lambda *a: calls.append(a[2]) or follow(*a)
    try:
        assert refine(boxes[:2])[1].tolist() == [100, 40, 196, 160]
    finally:
        postprocess._follow_line = follow
    assert sorted(calls) == [-1, 1]
    assert untraced[0].tolist() != traced[0].tolist()
    assert np.array_equal(traced[2:4], untraced[2:4])
    # the stop at a mostly bright row and the stop at a run much wider than the line each keep
    # the third chirp's box out of the burst; without both it would run into it
    fill, wide = postprocess.LINE_MAX_FILL, postprocess.LINE_MAX_WIDTH
    try:
        postprocess.LINE_MAX_FILL = 1.0
        assert refine(boxes[4:5])[0, 3] == 210
        postprocess.LINE_MAX_FILL, postprocess.LINE_MAX_WIDTH = fill, 1e9
        assert refine(boxes[4:5])[0, 3] == 210
        postprocess.LINE_MAX_FILL = 1.0
        assert refine(boxes[4:5])[0, 3] > 210
    finally:
        postprocess.LINE_MAX_FILL, postprocess.LINE_MAX_WIDTH = fill, wide
    b, s, lab = postprocess.refine_boxes(t, boxes[:2], np.array([0.9, 0.4]), np.zeros(2, np.int64), 0.1, 0.5,
                                         2, 15.0, 60.0, True)
    assert b.tolist() == [[100, 40, 196, 160]] and s.tolist() == [0.9]
    # off without refine_peak_db, whose level the line's pixels are held to
    assert np.array_equal(postprocess.refine_edges(t, boxes[:1], 0.1, min_rows=2, trace=True)[0, [1, 3]],
                          boxes[0, [1, 3]])
    for bad in (1, 0, "true", None, 0.5):
        with pytest.raises(ValueError, match=r"anchor_free.trace_lines .* is not true or false"):
            postprocess.check_trace_lines(bad)
    assert postprocess.check_trace_lines(True) is True and postprocess.check_trace_lines(np.bool_(False)) is False


def test_refine_peak_db_is_a_card_option_of_the_detector(tmp_path):
    """anchor_free.refine_peak_db on a card reaches the Detector's model path: its boxes are
    the decoded boxes refined with it (the shared post-processing); a bad value is refused."""
    from gnuradio.rfdetect.inference.model_runtime import ModelError
    plain = _default_model_with(tmp_path, refine_edges=0.0, splatter_db=0.0)
    models = {v: _default_model_with(tmp_path, refine_peak_db=v, splatter_db=0.0) for v in (0.0, 15.0)}
    assert [m.refine_peak_db for m in models.values()] == [0.0, 15.0]
    t = _bursts_tile()
    raw = plain.raw(t)
    assert len(raw[0]) > 0
    wants = []
    for v, m in models.items():
        want = postprocess.refine_boxes(t, *raw, m.refine_edges, m.card.nms_iou, m.refine_min_rows, v,
                                        m.card.spectrogram.db_per_unit)
        got = m.raw(t)
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
        wants.append(want[0])
    # the option moves a box on this tile (the network's box below the narrow burst snaps to
    # its rows), so the comparison above would fail if the model path ignored the key
    assert not np.array_equal(*wants)
    with pytest.raises(ModelError, match=r"anchor_free.refine_peak_db -3 is not a number of dB"):
        _default_model_with(tmp_path, refine_peak_db=-3)


def test_trace_lines_is_a_card_option_of_the_detector(tmp_path):
    """anchor_free.trace_lines on a card reaches the Detector's model path: its boxes are the
    decoded boxes refined with it. On a chirp brighter in the middle of its sweep, the
    network boxes the bright stretch; with the key that box becomes the whole chirp."""
    from gnuradio.rfdetect.inference.model_runtime import ModelError
    plain = _default_model_with(tmp_path, refine_edges=0.0, splatter_db=0.0)
    models = {v: _default_model_with(tmp_path, trace_lines=v, splatter_db=0.0) for v in (False, True)}
    assert [m.trace_lines for m in models.values()] == [False, True]
    t = _floor_tile(1, 1024, 1024)
    rows = np.arange(200, 500)
    cols = 300 + (rows - 200)
    amp = np.where((rows >= 300) & (rows < 400), 0.8, 0.35)   # 48 dB, and 21 dB at its ends
    t[rows, cols] += amp
    t[rows, cols + 1] += amp
    raw = plain.raw(t)
    chirp = np.array([[300, 200, 602, 500]], np.float32)
    best = {}
    for v, m in models.items():
        want = postprocess.refine_boxes(t, *raw, m.refine_edges, m.card.nms_iou, m.refine_min_rows,
                                        m.refine_peak_db, m.card.spectrogram.db_per_unit, v)
        got = m.raw(t)
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
        best[v] = float(postprocess.box_iou_matrix(chirp, got[0]).max())
    assert best[True] > 0.9 and best[False] < 0.5, best
    with pytest.raises(ModelError, match=r"anchor_free.trace_lines 1 is not true or false"):
        _default_model_with(tmp_path, trace_lines=1)


def test_refine_min_rows_is_a_card_option_of_the_detector(tmp_path):
    """anchor_free.refine_min_rows on a card reaches the Detector's model path: its boxes
    are the unrefined boxes refined with that many rows; a bad value is refused."""
    from gnuradio.rfdetect.inference.model_runtime import ModelError
    plain = _default_model_with(tmp_path, refine_edges=0.0)
    models = {v: _default_model_with(tmp_path, refine_min_rows=v) for v in (8, 2)}
    assert [m.refine_min_rows for m in models.values()] == [8, 2]
    t = _bursts_tile()
    t[800:803, 300:700] += 0.4  # a 3-row burst
    raw = plain.raw(t)
    assert len(raw[0]) > 0
    got = {}
    for v, m in models.items():
        got[v] = m.raw(t)
        want = postprocess.refine_boxes(t, *raw, m.refine_edges, m.card.nms_iou, v, m.refine_peak_db,
                                        m.card.spectrogram.db_per_unit)
        assert np.array_equal(got[v][0], want[0]) and np.array_equal(got[v][1], want[1])
    assert not np.array_equal(got[8][0], got[2][0])  # the short burst's box moved
    with pytest.raises(ModelError, match=r"anchor_free.refine_min_rows 0 is not a whole number"):
        _default_model_with(tmp_path, refine_min_rows=0)


def test_box_vote_is_a_card_option_of_the_detector(tmp_path):
    """anchor_free.box_vote on a card switches box voting on in the Detector's model path."""
    models = {v: _default_model_with(tmp_path, box_vote=v, refine_edges=0.0) for v in (0.0, 0.6)}
    assert [m.box_vote for m in models.values()] == [0.0, 0.6]
    t = _bursts_tile()
    off, on = models[0.0].raw(t), models[0.6].raw(t)
    assert len(off[0]) > 0 and len(on[0]) > 0
    assert not np.array_equal(on[0], off[0])  # the voted boxes moved


def _switched_emission_tile(seed=4):
    """A strong narrow emission (45 dB over the floor) on from row 100 to 180, its switching
    splatter (9 dB, 200 columns wide) in rows 99-101 and 179-181, a short burst over it
    while it is on, and a Wi-Fi-like frame with its acknowledgement two rows after it."""
    t = _floor_tile(seed, 256, 512)
    t[100:180, 240:250] += 0.75
    t[99:101, 150:350] += 0.15
    t[179:181, 150:350] += 0.15
    t[140:142, 150:350] += 0.25             # a burst across the emission (BLE over a LoRa chirp)
    t[20:60, 300:450] += 0.4                # a frame ...
    t[62:64, 300:450] += 0.4                # ... and its ACK
    return t


def test_splatter_mask_finds_the_rows_where_a_strong_emission_switches():
    t = _switched_emission_tile()
    boxes = np.array([[150, 99, 350, 101],    # onset splatter
                      [150, 179, 350, 181],   # end splatter
                      [150, 140, 350, 142],   # a burst with the emission on both sides
                      [150, 96, 350, 103],    # 7 rows: taller than switching splatter
                      [300, 62, 450, 64],     # the ACK after its frame
                      [300, 20, 450, 60]],    # the frame
                     np.float32)
    got = postprocess.splatter_mask(t, boxes, 20.0, 60.0)
    assert got.tolist() == [True, True, False, False, False, False]
    # the contrast is in dB: 45 dB of emission over a 9 dB box passes 30 dB, not 40
    assert postprocess.splatter_mask(t, boxes[:2], 30.0, 60.0).tolist() == [True, True]
    assert postprocess.splatter_mask(t, boxes[:2], 40.0, 60.0).tolist() == [False, False]
    # the same tile in plain dB (normalisation "none"): the same boxes
    assert postprocess.splatter_mask(t * 60 - 10, boxes, 20.0, 1.0).tolist() == got.tolist()
    assert not postprocess.splatter_mask(t, boxes, 0.0, 60.0).any()  # 0: off
    # at a tile's edge the one side in the tile decides (the overlapping tile sees both)
    edge = _floor_tile(5, 64, 512)
    edge[2:40, 240:250] += 0.75
    edge[0:2, 150:350] += 0.15
    edge[60:64, 100:120] += 0.3
    assert postprocess.splatter_mask(edge, np.array([[150, 0, 350, 2], [100, 60, 120, 64]], np.float32),
                                     20.0, 60.0).tolist() == [True, False]
    # a burst over a continuing emission that dips for a row on one side is still no switch
    dip = _switched_emission_tile()
    dip[138, 240:250] -= 0.75
    assert postprocess.splatter_mask(dip, boxes[2:3], 20.0, 60.0).tolist() == [False]
    # a box 2.5 rows tall over 4 pixel rows is measured by its height, as the docs say
    assert postprocess.splatter_mask(t, np.array([[150, 98.7, 350, 101.2]], np.float32), 20.0, 60.0).tolist() == [True]
    # NaN pixels (a dropped frame) decide nothing
    t[99:101, 150:160] = np.nan
    assert postprocess.splatter_mask(t, boxes[:1], 20.0, 60.0).tolist() == [False]
    b, s, lab = postprocess.drop_splatter(_switched_emission_tile(), boxes, np.arange(6.0), np.arange(6), 20.0, 60.0)
    assert s.tolist() == [2, 3, 4, 5] and lab.tolist() == [2, 3, 4, 5] and b.tolist() == boxes[2:].tolist()
    for bad in (-1, "x", None, float("nan"), float("inf"), True):
        with pytest.raises(ValueError, match=r"anchor_free.splatter_db .* is not a number of dB >= 0"):
            postprocess.check_splatter_db(bad)
    assert postprocess.check_splatter_db(20) == 20.0


def test_splatter_db_is_a_card_option_of_the_detector(tmp_path):
    """anchor_free.splatter_db on a card reaches the Detector's model path: the embedded default
    model boxes the rows where a 60 dB chirp switches on and off (real IQ through the one
    spectrogram function), and with the option those boxes go and the chirp's stays."""
    from gnuradio.rfdetect.dsp.spectrogram import SpectrogramParams, spectrogram
    from gnuradio.rfdetect.inference.model_runtime import ModelError
    p = SpectrogramParams()
    fs, n = 10e6, 1024 * p.hop + p.fft_size
    t = np.arange(n) / fs
    rng = np.random.default_rng(1)
    x = ((rng.standard_normal(n) + 1j * rng.standard_normal(n)) * np.sqrt(0.5)).astype(np.complex64)
    sweep = 1.5e6 + 2e5 * np.abs((t * 500) % 2 - 1)  # 200 kHz up and down every 4 ms
    on = (t >= 0.05) & (t < 0.15)
    x += (on * np.sqrt(1e6 * 2e5 / fs) * np.exp(2j * np.pi * np.cumsum(sweep) / fs)).astype(np.complex64)
    tile = spectrogram(x, p)[:1024]
    models = {v: _default_model_with(tmp_path, splatter_db=v) for v in (0.0, 20.0)}
    assert [m.splatter_db for m in models.values()] == [0.0, 20.0]
    off, on_ = models[0.0].raw(tile), models[20.0].raw(tile)
    rows_on, rows_off = p.sample_to_row(0.05 * fs), p.sample_to_row(0.15 * fs)
    thin = [b for b in off[0] if b[3] - b[1] <= postprocess.SPLATTER_MAX_ROWS]
    assert thin and all(min(abs(b[1] - rows_on), abs(b[1] - rows_off)) < 3 for b in thin)
    assert not [b for b in on_[0] if b[3] - b[1] <= postprocess.SPLATTER_MAX_ROWS]
    assert [b for b in on_[0] if abs(b[1] - rows_on) < 3 and abs(b[3] - rows_off) < 3]  # the chirp
    want = postprocess.drop_splatter(tile, *off, 20.0, p.db_per_unit)
    assert np.array_equal(on_[0], want[0]) and np.array_equal(on_[1], want[1])
    with pytest.raises(ModelError, match=r"anchor_free.splatter_db -3 is not a number of dB"):
        _default_model_with(tmp_path, splatter_db=-3)


def test_the_in_tile_objectness_target_scores_the_box_the_detector_reports():
    """target_in_tile: a signal cut by the tile's edge (a carrier, a key-up) whose box runs
    past that edge is reported cut to the tile (tile_detector.to_records), so its
    objectness target is the IoU of the cut box (here 1), not of the box as predicted
    (here 2/3); a box inside the tile gets the same target either way."""
    h, w = 16, 16  # cells: the tile is 64 rows x 128 columns
    cut = torch.tensor([[40.0, 32.0, 56.0, 64.0]])      # runs to the tile's last row
    inside = torch.tensor([[80.0, 8.0, 96.0, 24.0]])
    lab = [torch.tensor([0])]
    cls = torch.zeros((1, 2, h, w))

    def case(gt, overshoot_rows):
        assign = nets.anchor_free_targets(gt, h, w, 4, 8)
        pos = assign >= 0
        obj = torch.where(pos, torch.tensor(8.0), torch.tensor(-10.0))[None, None]
        box = gt[0].clone()
        box[3] += overshoot_rows
        pred = box.view(1, 4, 1, 1).expand(1, 4, h, w).clone()
        raw = nets.anchor_free_loss(obj, cls, pred, [gt], lab, 4, 8, class_per_box=True)
        in_tile = nets.anchor_free_loss(obj, cls, pred, [gt], lab, 4, 8, class_per_box=True, target_in_tile=True)
        return float(raw), float(in_tile), obj[0, 0], pos

    def qfl(obj, pos, target):
        t = torch.where(pos, torch.tensor(target), torch.tensor(0.0))
        p = torch.sigmoid(obj)
        return float((torch.nn.functional.binary_cross_entropy_with_logits(obj, t, reduction="none")
                      * (p - t).abs() ** 2).sum() / t.sum())

    raw, in_tile, obj, pos = case(cut, 16.0)
    assert int(pos.sum()) >= 2
    # only the objectness term differs (the box loss is of the box as predicted in both)
    assert raw - in_tile == pytest.approx(qfl(obj, pos, 32.0 / 48.0) - qfl(obj, pos, 1.0), rel=1e-4)
    assert raw - in_tile > 0.2  # 0.44: the raw target 2/3 against p ~ 1 costs that much
    raw, in_tile, _, _ = case(inside, 4.0)
    assert raw == pytest.approx(in_tile, abs=1e-6)


def test_box_voting_takes_the_objectness_weighted_mean_of_the_boxes_nms_folds_in():
    """vote_boxes / decode_anchor_free(box_vote=IOU): each kept box becomes the
    objectness-weighted mean of the candidates overlapping it at IOU or more (itself
    included); a candidate under IOU, another signal's, does not vote; 0 keeps NMS's box."""
    kept = np.array([[10.0, 10.0, 30.0, 50.0]])
    near = np.array([14.0, 10.0, 30.0, 54.0])       # IoU 0.74 with the kept box
    far = np.array([10.0, 40.0, 30.0, 80.0])        # IoU 0.14: not the same box
    cands = np.vstack([kept, near, far])
    w = np.array([0.6, 0.3, 0.9])
    want = (0.6 * kept[0] + 0.3 * near) / 0.9
    assert postprocess.vote_boxes(kept, cands, w, 0.6)[0] == pytest.approx(want, rel=1e-6)
    assert postprocess.vote_boxes(kept, cands, w, 0.8)[0] == pytest.approx(kept[0])  # near is under 0.8
    assert postprocess.vote_boxes(np.zeros((0, 4)), cands, w, 0.6).shape == (0, 4)

    # through the decode: two cells of one signal, the better-scored one's box a little off
    h, w_ = H // SY, W // SX
    obj = np.full((1, 1, h, w_), 0.01, np.float32)
    probs = np.zeros((1, 2, h, w_), np.float32)
    probs[0, 0] = 1.0
    boxes = np.zeros((1, 4, h, w_), np.float32)
    (i0, j0), (i1, j1) = (5, 3), (6, 3)
    obj[0, 0, i0, j0], obj[0, 0, i1, j1] = 0.8, 0.4
    probs[0, :, i1, j1] = (0.6, 0.4)  # its score (objectness x probability) is 0.24, not 0.4
    boxes[0, :, i0, j0], boxes[0, :, i1, j1] = kept[0], near
    plain, _, _ = decode_anchor_free(obj, probs, boxes, 0.3, 0.5, 0.5, class_region=0.5, strides=(SY, SX))
    voted, s, lab = decode_anchor_free(obj, probs, boxes, 0.3, 0.5, 0.5, class_region=0.5, strides=(SY, SX),
                                       box_vote=0.6)
    assert plain.tolist() == [kept[0].tolist()]
    assert voted[0] == pytest.approx((0.8 * kept[0] + 0.4 * near) / 1.2, rel=1e-5)
    assert lab.tolist() == [0] and len(s) == 1
    # the cell's-own-class path (class_region 0) weighs the votes by objectness too
    voted0, _, _ = decode_anchor_free(obj, probs, boxes, 0.2, 0.5, 0.5, class_region=0.0, box_vote=0.6)
    assert voted0[0] == pytest.approx((0.8 * kept[0] + 0.4 * near) / 1.2, rel=1e-5)
    for bad in (1.5, -0.1, "half", None):
        with pytest.raises(ValueError, match=r"anchor_free.box_vote .* is not a number in \[0, 1\]"):
            postprocess.check_box_vote(bad)


def test_class_confidence_ties_go_to_the_larger_choice(monkeypatch):
    """choose_class_confidence: of choices with the same validation score the largest wins
    (it names the fewest detections); a strictly better smaller one still wins."""
    from gnuradio.rfdetect.dsp.spectrogram import SpectrogramParams
    from rfdetect_training import train
    arch = make_arch("anchor_free", ["a", "b"], None, SpectrogramParams(), 64)
    scores = {}
    monkeypatch.setattr(train, "validation_ap", lambda a, *args, **kw: {"select": scores[a.class_confidence]})
    scores.update({c: 0.7 for c in train.CLASS_CONFIDENCE_CHOICES})
    assert train.choose_class_confidence(arch, None, "cpu", None, [])[0] == max(train.CLASS_CONFIDENCE_CHOICES)
    low = min(train.CLASS_CONFIDENCE_CHOICES)
    scores[low] = 0.71
    assert train.choose_class_confidence(arch, None, "cpu", None, [])[0] == low


def test_training_evaluation_refines_short_boxes_with_the_archs_min_rows(monkeypatch):
    """training's decode (validation AP, rfdetect-train evaluate --checkpoint) passes the
    arch's refine_min_rows, refine_peak_db (with the spectrogram's dB per unit) and
    trace_lines to the shared refinement, as the Detector passes its card's."""
    from gnuradio.rfdetect.dsp.spectrogram import SpectrogramParams
    arch = make_arch("anchor_free", ["a"], None, SpectrogramParams(), 64)
    got = []

    def spy(tile, b, s, lab, frac, nms_iou, min_rows=postprocess.REFINE_MIN_SIZE, peak_db=0.0, db_per_unit=1.0,
            trace=False):
        got.append((min_rows, peak_db, db_per_unit, trace))
        return b, s, lab
    monkeypatch.setattr(postprocess, "refine_boxes", spy)
    h, w = 16, 8
    obj = torch.zeros((1, 1, h, w))
    obj[0, 0, 4, 4] = 0.9
    boxes = torch.zeros((1, 4, h, w))
    boxes[0, :, 4, 4] = torch.tensor([20.0, 16.0, 60.0, 19.0])
    assert arch.trace_lines is True
    for rows, peak, trace in ((2, 15.0, True), (8, 0.0, False)):
        arch.refine_min_rows, arch.refine_peak_db, arch.trace_lines = rows, peak, trace
        arch._decode(np.zeros((64, 64), np.float32), obj, torch.ones((1, 1, h, w)), boxes, 0.5)
    assert got == [(2, 15.0, 60.0, True), (8, 0.0, 60.0, False)]


@pytest.mark.parametrize("class_region", [0.0, 0.5])
def test_a_wide_burst_does_not_starve_a_short_one_of_candidates(class_region):
    """Over MAX_CANDIDATES cells, each local objectness peak is a candidate before the
    plateau of a wide burst: a short burst scoring lower than the wide one's thousands of
    cells is still found (it was not, when candidates went by objectness alone)."""
    h, w = 128, 64
    obj = np.full((1, 1, h, w), 0.01, np.float32)
    probs = np.zeros((1, 2, h, w), np.float32)
    probs[0, 0] = 1.0
    boxes = np.zeros((1, 4, h, w), np.float32)
    rng = np.random.default_rng(0)
    obj[0, 0, :100, :40] = 0.7 + 0.02 * rng.standard_normal((100, 40))  # 4000 cells of one wide burst
    obj[0, 0, 50, 20] = 0.75                        # its peak
    obj[0, 0, 0, 0] = np.nan                        # a NaN cell is never a candidate, nor a peak's rival
    boxes[0, :, :100, :40] = np.array([0, 0, 320, 400], np.float32)[:, None, None]
    obj[0, 0, 110, 50] = 0.4                        # a short burst elsewhere
    boxes[0, :, 110, 50] = [396, 439, 412, 442]
    kw = dict(class_region=class_region, strides=(4.0, 8.0)) if class_region else {}
    b, s, lab = decode_anchor_free(obj, probs, boxes, 0.3, 0.5, 0.5, max_candidates=2000, **kw)
    assert sorted(map(tuple, b.tolist())) == [(0, 0, 320, 400), (396, 439, 412, 442)]
    # under the budget nothing changes: every cell over the threshold is a candidate
    b, _, _ = decode_anchor_free(obj, probs, boxes, 0.3, 0.5, 0.5, max_candidates=10000, **kw)
    assert len(b) == 2
