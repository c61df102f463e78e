"""The three architectures, each: its training samples, its loss, its prediction on a
tile (with the same NumPy pre/post-processing the Detector block uses), its export."""
from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from gnuradio.rfdetect.inference import postprocess
from gnuradio.rfdetect.inference.energy_detector import EnergyDetector
from gnuradio.rfdetect.formats.tile_io import check_tile_png, read_tile_png

from . import nets
from .prepare import DataError, load_entry

ARCHS = ("anchor_free", "two_stage", "dense", "faster_rcnn")
DEFAULT_ARCH = "anchor_free"
# what anchor_free's objectness learns at a positive cell: the IoU with its signal of the cell's
# box cut to the tile (as the Detector reports it) or of the box as predicted
OBJECTNESS_TARGETS = ("raw", "in_tile")
# a proposal that overlaps a labelled box this much takes its label; under BG_IOU it is background
MATCH_IOU = 0.5
BG_IOU = 0.3


def load_tile(ds: dict, image: str):
    e = load_entry(ds, image)
    try:
        tile = read_tile_png(Path(ds["root"]) / "tiles" / image)
    except (ValueError, OSError) as err:
        raise DataError(str(err)) from None
    if tile.shape != (ds["tile_height"], ds["params"].width):
        raise DataError(f"{image}: tile is {tile.shape}, dataset says {(ds['tile_height'], ds['params'].width)}")
    boxes = np.array([[b["x_min"], b["y_min"], b["x_max"], b["y_max"]] for b in e["bboxes"]],
                     np.float32).reshape(-1, 4)
    index = {lab: i for i, lab in enumerate(ds["labels"])}
    unknown = [b["label"] for b in e["bboxes"] if b["label"] not in index]
    if unknown:
        raise DataError(f"{image}: labels {sorted(set(unknown))} are not in the dataset's labels {ds['labels']}")
    labels = np.array([index[b["label"]] for b in e["bboxes"]], np.int64)
    return tile, boxes, labels


class TileSet(Dataset):
    """Whole tiles with their boxes (anchor_free, dense, faster_rcnn), read from disk
    when asked for, so memory does not grow with the number of tiles. With
    ``augment`` (training/augment.py) each read is augmented; ``paste`` takes its donor
    among the tiles that have boxes."""

    def __init__(self, ds, images, augment=(), seed=0):
        from .augment import Augmenter
        from .prepare import load_entry
        self.ds, self.images = ds, list(images)
        shape = (ds["tile_height"], ds["params"].width)
        self.tile_labels = []  # each tile's set of labels (a few bytes a tile; the pixels stay on disk)
        for im in self.images:  # a missing, mislabelled or corrupt tile fails now, not mid-epoch
            self.tile_labels.append({b["label"] for b in load_entry(ds, im)["bboxes"]})
            try:
                check_tile_png(Path(ds["root"]) / "tiles" / im, shape)
            except ValueError as e:
                raise DataError(str(e)) from None
        self.with_boxes = [im for im, labs in zip(self.images, self.tile_labels) if labs]
        self.augment = Augmenter(augment, ds["params"].db_high - ds["params"].db_low, seed,
                                 donor=self._donor if self.with_boxes else None) if augment else None

    def _donor(self, rng):
        return load_tile(self.ds, self.with_boxes[int(rng.integers(len(self.with_boxes)))])

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        tile, boxes, labels = load_tile(self.ds, self.images[i])
        if self.augment is not None:
            tile, boxes, labels = self.augment(tile, boxes, labels)
        return torch.from_numpy(tile)[None], torch.from_numpy(boxes), torch.from_numpy(labels)

    def sample_weights(self, threshold: float = 0.3) -> np.ndarray:
        """Class-balanced sampling (LVIS repeat factors): a tile is drawn in proportion to
        max(1, sqrt(threshold / f)) over its classes, f being the fraction of tiles that
        hold the class, so rare classes are seen more often."""
        per_tile = self.tile_labels
        n = max(1, len(per_tile))
        freq: dict[str, int] = {}
        for labs in per_tile:
            for lab in labs:
                freq[lab] = freq.get(lab, 0) + 1
        return np.array([max([1.0] + [np.sqrt(threshold / (freq[lab] / n)) for lab in labs]) for labs in per_tile])


def collate_tiles(batch):
    return torch.stack([b[0] for b in batch]), [b[1] for b in batch], [b[2] for b in batch]


class CropSet(Dataset):
    """two_stage samples: the energy detector's proposals on each tile, labelled by
    their best IoU with a labelled box (>= MATCH_IOU: that label, < BG_IOU:
    background, between: left out), plus every labelled box itself."""

    def __init__(self, ds, images, crop_size=postprocess.CROP_SIZE):
        proposer = EnergyDetector(ds["params"])
        crops, geoms, targets = [], [], []
        for im in images:
            tile, boxes, labels = load_tile(ds, im)
            props = np.array([[b.x0, b.y0, b.x1, b.y1] for b in proposer.detect(tile)], np.float32).reshape(-1, 4)
            if len(boxes) and len(props):
                iou = postprocess.box_iou_matrix(props, boxes)
                best, arg = iou.max(axis=1), iou.argmax(axis=1)
            else:
                best, arg = np.zeros(len(props)), np.zeros(len(props), np.int64)
            t = np.where(best >= MATCH_IOU, labels[arg] + 1 if len(labels) else 0, 0)
            use = (best >= MATCH_IOU) | (best < BG_IOU)
            all_boxes = np.concatenate([props[use], boxes])
            all_t = np.concatenate([t[use], labels + 1]).astype(np.int64)
            if len(all_boxes):
                c, g = postprocess.letterbox_crops(tile, all_boxes, crop_size)
                crops.append(c.astype(np.float16))
                geoms.append(g)
                targets.append(all_t)
        if not crops:
            raise DataError("no proposals and no labelled boxes in these tiles: nothing to train the classifier on")
        self.crops = np.concatenate(crops)
        self.geoms = np.concatenate(geoms)
        self.targets = np.concatenate(targets)

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return (torch.from_numpy(self.crops[i].astype(np.float32)), torch.from_numpy(self.geoms[i]),
                int(self.targets[i]))


class Arch:
    name = ""
    output_format = ""
    augment: tuple = ()  # augmentations for training tiles (training/augment.py)
    # export check: absolute tolerance per output where ONNX_ATOL does not fit its units
    output_atol: dict = {}
    # torch.export cannot capture data-dependent shapes (Faster R-CNN's proposals); trying
    # costs a minute and prints the whole graph
    torch_exportable = True
    # train in channels-last (NHWC) memory on the CPU: measured for anchor_free only
    channels_last = False

    def __init__(self, labels, backbone, params, tile_height):
        self.labels, self.backbone, self.params, self.tile_height = list(labels), backbone, params, tile_height

    def dataset(self, ds, images, train=False):
        return TileSet(ds, images, self.augment if train else ())

    collate = staticmethod(collate_tiles)

    def card_extra(self) -> dict:
        return {"architecture": self.name, "backbone": self.backbone}


class TwoStage(Arch):
    name = "two_stage"
    output_format = "crop_classifier/1"
    collate = None  # default collate

    def build(self):
        return nets.CropClassifier(len(self.labels), self.backbone)

    def dataset(self, ds, images, train=False):
        return CropSet(ds, images)

    def loss(self, model, batch, device):
        crops, geoms, t = batch
        return torch.nn.functional.cross_entropy(model(crops.to(device), geoms.to(device)), t.to(device))

    def predict(self, model, tile, device, score_threshold=0.0):
        props = EnergyDetector(self.params).detect(tile)
        if not props:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
        boxes = np.array([[b.x0, b.y0, b.x1, b.y1] for b in props], np.float32)
        crops, geom = postprocess.letterbox_crops(tile, boxes)
        with torch.no_grad():
            probs = torch.softmax(model(torch.from_numpy(crops).to(device), torch.from_numpy(geom).to(device)), 1)
        return postprocess.classify_proposals(probs.float().cpu().numpy(), boxes, score_threshold)

    def export_module(self, model):
        return _Softmaxed(model)

    def example_inputs(self, ds_tile):
        boxes = np.array([[10, 10, 40, 30], [5, 50, 60, 90]], np.float32)
        crops, geom = postprocess.letterbox_crops(ds_tile, boxes)
        return (torch.from_numpy(crops), torch.from_numpy(geom))

    input_names = ["crops", "geometry"]
    output_names = ["probs"]
    dynamic_axes = {"crops": {0: "n"}, "geometry": {0: "n"}, "probs": {0: "n"}}

    def card_extra(self):
        return {**super().card_extra(), "crop_size": postprocess.CROP_SIZE, "proposals": {}}


class _Softmaxed(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, crops, geometry):
        return torch.softmax(self.m(crops, geometry), dim=1)


class Dense(Arch):
    name = "dense"
    output_format = "dense_ltrb/1"

    def build(self):
        return nets.DenseDetector(len(self.labels), self.backbone)

    def loss(self, model, batch, device):
        tiles, boxes, labels = batch
        logits, ltrb = model(tiles.to(device))
        h, w = logits.shape[-2:]
        targets = [nets.dense_targets(b, lab, len(self.labels), h, w, nets.DenseDetector.stride)
                   for b, lab in zip(boxes, labels)]
        cls_t = torch.stack([t[0] for t in targets]).to(device)
        reg_t = torch.stack([t[1] for t in targets]).to(device)
        pos = torch.stack([t[2] for t in targets]).to(device)
        return nets.dense_loss(logits.float(), ltrb.float(), cls_t, reg_t, pos)

    def predict(self, model, tile, device, score_threshold=0.05, nms_iou=0.5):
        with torch.no_grad():
            logits, ltrb = model(torch.from_numpy(tile)[None, None].to(device))
        return postprocess.decode_dense(torch.sigmoid(logits).float().cpu().numpy(), ltrb.float().cpu().numpy(),
                                        nets.DenseDetector.stride, score_threshold, nms_iou)

    def export_module(self, model):
        return _DenseExport(model)

    def example_inputs(self, ds_tile):
        return (torch.from_numpy(ds_tile)[None, None],)

    input_names = ["tile"]
    output_names = ["scores", "ltrb"]
    dynamic_axes = None

    def card_extra(self):
        return {**super().card_extra(), "dense": {"stride": nets.DenseDetector.stride}}


class _DenseExport(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, tile):
        logits, ltrb = self.m(tile)
        return torch.sigmoid(logits), ltrb


class FasterRCNN(Arch):
    name = "faster_rcnn"
    output_format = "boxes_scores_labels/1"
    torch_exportable = False

    def build(self):
        return nets.faster_rcnn(len(self.labels), self.backbone, self.tile_height, self.params.width)

    def loss(self, model, batch, device):
        tiles, boxes, labels = batch
        images = [t.to(device).expand(3, -1, -1) for t in tiles]
        targets = [{"boxes": b.to(device), "labels": lab.to(device) + 1} for b, lab in zip(boxes, labels)]
        model.train()
        return sum(model(images, targets).values())

    def predict(self, model, tile, device, score_threshold=0.05):
        model.eval()
        with torch.no_grad():
            out = model([torch.from_numpy(tile)[None].expand(3, -1, -1).to(device)])[0]
        keep = out["scores"] >= score_threshold
        return (out["boxes"][keep].cpu().numpy(), out["scores"][keep].cpu().numpy(),
                (out["labels"][keep] - 1).cpu().numpy())

    def export_module(self, model):
        return nets.FasterRCNNExport(model)

    def example_inputs(self, ds_tile):
        return (torch.from_numpy(ds_tile)[None, None],)

    input_names = ["tile"]
    output_names = ["boxes", "scores", "labels"]
    dynamic_axes = {"boxes": {0: "n"}, "scores": {0: "n"}, "labels": {0: "n"}}


class AnchorFree(Arch):
    name = "anchor_free"
    output_format = "anchor_free/1"
    # detections' score floor while evaluating (AP needs the low-score tail too)
    eval_score = 0.05
    nms_iou = 0.5
    # a box lying 60 % inside a better one is a fragment of the same signal: on the
    # validation recordings of the 24-recording run, class-agnostic AP50 0.90 (IoU-only
    # NMS) -> 0.97 (0.6), 0.95 (0.75), 0.93 (0.9); an emitter wholly inside another's band
    # and time is lost with it (docs/training.md)
    nms_contained = 0.6
    # boxes overlapping in time over nearly the same band are pieces of one signal
    # (postprocess.merge_same_band): on the 20 validation recordings of a realistic-corpus
    # run (docs/training.md), class-agnostic AP50 0.336 (off), 0.284 (0.5), 0.337 (0.7),
    # 0.342 (0.85)
    merge_band_iou = 0.85
    # box edges moved to where the energy ends (postprocess.refine_edges), threshold 10 % of
    # the way from the floor to the box's peak: chosen on tuning recordings (rfdetect synth,
    # seeds 8001-8501, no held-out set): class-agnostic AP50 of the embedded default, off /
    # 0.1 / 0.2: classic 0.279 / 0.342 / 0.352, mixed 0.092 / 0.092 / 0.092, cellular 0.579 /
    # 0.603 / 0.599, vhf-uhf 0.021 / 0.019 / 0.018, ism-2g4 0.287 / 0.272 / 0.272; the
    # 24-recording classic model 0.824 / 0.912 on classic
    refine_edges = 0.1
    # boxes at least this many rows tall have their time edges refined (rfdetect-train export
    # --refine-min-rows; before session 28, 8): 2 raised the mean class-agnostic AP50 on the
    # tuning sets of all three embedded models, wideband 0.555 -> 0.571 and default 0.493 ->
    # 0.505 (13 wide and radar sets), narrowband 0.445 -> 0.453 (4 VHF/UHF sets), no set down
    # (docs/training.md, session 28)
    refine_min_rows = 2
    # a box no more than 3 rows tall at the row where an emission 20 dB stronger in its band
    # starts or ends is that emission's switching splatter (postprocess.drop_splatter; 0: off;
    # rfdetect-train export --splatter-db): on the TorchSig tuning set (seed 20261124) `auto`'s
    # class-agnostic AP50 0.683 -> 0.692, at 20 dB and more 0.49 -> 0.58; no other tuning set
    # moved (docs/training.md, session 34)
    splatter_db = 20.0
    # a box whose mean profile shows nothing clear (a strong chirp's diagonal line, boxed as wide
    # as the noise around it) snaps to its pixels at least this many dB above the floor
    # (postprocess.refine_edges; 0: off; rfdetect-train export --refine-peak-db): on the 16
    # tuning sets outside VHF/UHF, mean class-agnostic AP50 of `auto` 0.661 -> 0.673 (t-cls20-hi
    # 0.877 -> 0.975) and of `default` 0.572 -> 0.582, the 11 VHF/UHF sets unchanged (0.677;
    # docs/training.md, session 37)
    refine_peak_db = 15.0
    # a box over part of a chirp's sweep grows to the whole sweep, following the line of pixels
    # refine_peak_db over the floor (postprocess.refine_edges; rfdetect-train export
    # --trace-lines / --no-trace-lines): on the 8 classic tuning sets, where the misses of 10 dB
    # and more were mostly chirps boxed over half their sweep, `default` gained on every set
    # (t-cls10b 0.873 -> 0.936), the other sets moved by 0.004 or less (docs/training.md,
    # session 38)
    trace_lines = True
    # box voting after NMS (postprocess.vote_boxes; 0: off; rfdetect-train export --box-vote):
    # at 0.6, +0.005 (narrowband) and +0.006 (wideband) mean AP50 on the tuning sets, no better
    # on the held-out sets (docs/training.md, session 27), so off here and in every embedded card
    box_vote = 0.0
    class_confidence = postprocess.DEFAULT_CLASS_CONFIDENCE
    # rfdetect-train export --score-rule; objectness alone measured better on some models and
    # tuning sets and worse on others (docs/training.md, "The score rule")
    score_rule = postprocess.DEFAULT_SCORE_RULE
    # a detection's class from its box's central half (postprocess.box_class_probs), not from
    # the one cell that gave the box: on classic tuning recordings (rfdetect synth seeds 8001
    # and 8101) mAP50 of three 30-minute models, cell -> 0.5: 0.64 -> 0.71, 0.61 -> 0.74,
    # 0.61 -> 0.64 and 0.81 -> 0.86, 0.64 -> 0.69, 0.67 -> 0.75 (docs/training.md)
    class_region = 0.5
    # boxes named from their time-averaged spectrum too (box_profile.ProfileClassifier, fitted
    # after training on the training tiles by training.profile; None: off)
    profile_classifier = None
    # "box": the class loss is the cross-entropy of each signal's mean class probability over
    # its positive cells (nets.anchor_free_loss), so only the cells that can see what names it
    # need be sure, as the class region above reads them; "cell": cross-entropy at every
    # positive cell (before session 11). The 30-minute 24-recording classic case, one run
    # each, tuning recordings (class-agnostic AP50 / mAP50): t-cls20 0.88 / 0.66 -> 0.96 /
    # 0.76, t-classic 0.90 / 0.83 -> 0.92 / 0.90, TorchSig 16 0.66 -> 0.63; a second
    # per-signal run (--seed 1) 0.78 / 0.68 and 0.84 / 0.70: runs spread as widely (docs/training.md)
    class_loss = "box"
    # OBJECTNESS_TARGETS: "in_tile", the IoU of a cell's box cut to the tile, as the Detector
    # reports it (nets.anchor_free_loss target_in_tile); "raw", of the box as predicted
    objectness_target = "raw"
    # a training step of two 1024 x 1024 tiles on one thread of an AVX-512 Xeon: 0.70 s
    # (NCHW) -> 0.55 s (docs/training.md, "Training speed on the CPU")
    channels_last = True

    def build(self):
        return nets.AnchorFreeDetector(len(self.labels))

    def loss(self, model, batch, device):
        tiles, boxes, labels = batch
        obj, cls, pred = model(tiles.to(device))
        n = nets.AnchorFreeDetector
        return nets.anchor_free_loss(obj.float(), cls.float(), pred.float(), boxes, labels, n.stride_y, n.stride_x,
                                     class_per_box=self.class_loss == "box",
                                     target_in_tile=self.objectness_target == "in_tile")

    def predict(self, model, tile, device, score_threshold=None):
        model.eval()
        with torch.no_grad():
            obj, cls, boxes = _AnchorFreeExport(model)(torch.from_numpy(tile)[None, None].to(device))
        return self._decode(tile, obj, cls, boxes, score_threshold)

    def predict_with_loss(self, model, tile, boxes, labels, device):
        """-> (the tile's loss, predict()'s detections) from one forward pass: validation
        scores every epoch, and a second pass for the loss was a twelfth of an epoch."""
        model.eval()
        n = nets.AnchorFreeDetector
        with torch.no_grad():
            obj, cls, pred = model(torch.from_numpy(tile)[None, None].to(device))
            loss = nets.anchor_free_loss(obj.float(), cls.float(), pred.float(), [torch.from_numpy(boxes)],
                                         [torch.from_numpy(labels)], n.stride_y, n.stride_x,
                                         class_per_box=self.class_loss == "box",
                                         target_in_tile=self.objectness_target == "in_tile")
            return float(loss), self._decode(tile, torch.sigmoid(obj), channel_softmax(cls), pred, None)

    def _decode(self, tile, obj, cls, boxes, score_threshold):
        b, s, lab = postprocess.decode_anchor_free(obj.float().cpu().numpy(), cls.float().cpu().numpy(),
                                                   boxes.float().cpu().numpy(),
                                                   self.eval_score if score_threshold is None else score_threshold,
                                                   self.nms_iou, self.class_confidence, contained=self.nms_contained,
                                                   merge_band_iou=self.merge_band_iou, score_rule=self.score_rule,
                                                   class_region=self.class_region,
                                                   strides=(nets.AnchorFreeDetector.stride_y,
                                                            nets.AnchorFreeDetector.stride_x),
                                                   box_vote=self.box_vote,
                                                   reclassify=None if self.profile_classifier is None else
                                                   partial(self.profile_classifier.combine, tile))
        b, s, lab = postprocess.refine_boxes(tile, b, s, lab, self.refine_edges, self.nms_iou, self.refine_min_rows,
                                             self.refine_peak_db, self.params.db_per_unit, self.trace_lines)
        return postprocess.drop_splatter(tile, b, s, lab, self.splatter_db, self.params.db_per_unit)

    def export_module(self, model):
        return _AnchorFreeExport(model)

    def example_inputs(self, ds_tile):
        return (torch.from_numpy(ds_tile)[None, None],)

    input_names = ["tile"]
    output_names = ["objectness", "class_probs", "boxes"]
    # boxes are pixel coordinates from exp() of the head: float32 ordering differences
    # reach a few 1e-4 px near 0, where a relative tolerance gives no room; 0.01 px is
    # still a hundredth of a bin
    output_atol = {"boxes": 1e-2}
    dynamic_axes = None

    def card_extra(self):
        n = nets.AnchorFreeDetector
        return {**super().card_extra(), "anchor_free": {"stride_y": n.stride_y, "stride_x": n.stride_x,
                                                        "nms_contained": self.nms_contained,
                                                        "merge_band_iou": self.merge_band_iou,
                                                        "refine_edges": self.refine_edges,
                                                        "refine_min_rows": self.refine_min_rows,
                                                        "splatter_db": self.splatter_db,
                                                        "refine_peak_db": self.refine_peak_db,
                                                        "trace_lines": self.trace_lines,
                                                        "box_vote": self.box_vote},
                "unknown_label": postprocess.DEFAULT_UNKNOWN_LABEL,
                "label_rule": {"class_confidence": self.class_confidence, "score": self.score_rule,
                               "rule": postprocess.SCORE_RULES[self.score_rule],
                               "class_region": self.class_region},
                **({} if self.profile_classifier is None else
                   {"profile_classifier": self.profile_classifier.value})}


class _AnchorFreeExport(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, tile):
        obj, cls, boxes = self.m(tile)
        return torch.sigmoid(obj), channel_softmax(cls), boxes


def channel_softmax(x: torch.Tensor) -> torch.Tensor:
    """Softmax over dim 1, written out. ONNX Runtime's Softmax on axis 1 of an NCHW tensor
    transposes it twice: 8 of the default model's 49 ms per 1024 x 1024 tile on 2 threads
    (ORT profile); these element-wise ops take under 1 ms."""
    e = torch.exp(x - x.amax(dim=1, keepdim=True))
    return e / e.sum(dim=1, keepdim=True)


def label_name(labels, index: int, unknown: str = postprocess.DEFAULT_UNKNOWN_LABEL) -> str:
    """A predicted label index -> its name (UNKNOWN_LABEL -> ``unknown``)."""
    return unknown if int(index) == postprocess.UNKNOWN_LABEL else labels[int(index)]


def make_arch(name, labels, backbone, params, tile_height) -> Arch:
    classes = {"anchor_free": AnchorFree, "two_stage": TwoStage, "dense": Dense, "faster_rcnn": FasterRCNN}
    if name not in classes:
        raise ValueError(f"--arch {name!r} is not one of {ARCHS}")
    if name == "anchor_free" and backbone not in (None, "anchor_free"):
        raise ValueError(f"--arch anchor_free has its own backbone; --backbone {backbone} does not apply")
    if backbone is None:
        backbone = {"faster_rcnn": "resnet18", "anchor_free": "anchor_free"}.get(name, "tiny")
    return classes[name](labels, backbone, params, tile_height)
