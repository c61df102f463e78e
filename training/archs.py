"""The three architectures, each: its training samples, its loss, its prediction on a
tile (with the same NumPy pre/post-processing the Detector block uses), its export."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from gnuradio.rfdetect import postprocess
from gnuradio.rfdetect.energy_detector import EnergyDetector
from gnuradio.rfdetect.tile_io import read_tile_png

from . import nets
from .prepare import DataError, load_entry

ARCHS = ("two_stage", "dense", "faster_rcnn")
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
    """Whole tiles with their boxes (dense, faster_rcnn). Tiles are read once."""

    def __init__(self, ds, images):
        self.items = [load_tile(ds, im) for im in images]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        tile, boxes, labels = self.items[i]
        return torch.from_numpy(tile)[None], torch.from_numpy(boxes), torch.from_numpy(labels)


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
    # torch.export cannot capture data-dependent shapes (Faster R-CNN's proposals); trying
    # costs a minute and prints the whole graph
    torch_exportable = True

    def __init__(self, labels, backbone, params, tile_height):
        self.labels, self.backbone, self.params, self.tile_height = list(labels), backbone, params, tile_height

    def dataset(self, ds, images):
        return TileSet(ds, images)

    collate = staticmethod(collate_tiles)

    def card_extra(self) -> dict:
        return {"architecture": self.name, "backbone": self.backbone}


class TwoStage(Arch):
    name = "two_stage"
    output_format = "crop_classifier/1"
    collate = None  # default collate

    def build(self):
        return nets.CropClassifier(len(self.labels), self.backbone)

    def dataset(self, ds, images):
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


def make_arch(name, labels, backbone, params, tile_height) -> Arch:
    classes = {"two_stage": TwoStage, "dense": Dense, "faster_rcnn": FasterRCNN}
    if name not in classes:
        raise ValueError(f"--arch {name!r} is not one of {ARCHS}")
    if backbone is None:
        backbone = "resnet18" if name == "faster_rcnn" else "tiny"
    return classes[name](labels, backbone, params, tile_height)
