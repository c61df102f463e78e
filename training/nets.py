"""Networks: backbones and the three detector architectures.

Backbones (``--backbone``): ``tiny`` (a 4-layer CNN, the CPU default), and from
torchvision ``resnet18/34/50``, ``mobilenet_v3_small/large``, ``efficientnet_b0``,
``convnext_tiny/small``, cut at stride 8 (a 1024-row tile becomes a 128-row map: a
short burst still spans a few cells). Weights start random: nothing is downloaded at
run time (field and CI machines are offline); spectrograms are far from ImageNet
photos anyway.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

BACKBONES = ("tiny", "resnet18", "resnet34", "resnet50", "mobilenet_v3_small", "mobilenet_v3_large",
             "efficientnet_b0", "convnext_tiny", "convnext_small")


def _conv(cin, cout, stride):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Backbone(nn.Module):
    """Grayscale [B,1,H,W] -> features [B,C,H/8,W/8]."""

    def __init__(self, name: str = "tiny"):
        super().__init__()
        if name not in BACKBONES:
            raise ValueError(f"backbone {name!r} is not one of {BACKBONES}")
        self.name = name
        self.rgb = name != "tiny"
        if name == "tiny":
            self.body = nn.Sequential(_conv(1, 16, 2), _conv(16, 32, 2), _conv(32, 64, 2), _conv(64, 64, 1))
        else:
            self.body = _torchvision_stride8(name)
        with torch.no_grad():
            self.channels = self.body(torch.zeros(1, 3 if self.rgb else 1, 64, 64)).shape[1]

    def forward(self, x):
        if self.rgb:  # torchvision backbones take 3 channels: the grayscale tile repeated
            x = x.expand(-1, 3, -1, -1)
        return self.body(x)


def _torchvision_stride8(name: str) -> nn.Module:
    import torchvision.models as tvm
    m = getattr(tvm, name)(weights=None)
    if name.startswith("resnet"):
        return nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool, m.layer1, m.layer2)
    layers, x = [], torch.zeros(1, 3, 64, 64)
    with torch.no_grad():
        for layer in m.features:
            y = layer(x)
            if y.shape[-1] < 8:  # past stride 8
                break
            layers.append(layer)
            x = y
    return nn.Sequential(*layers)


class CropClassifier(nn.Module):
    """two_stage, second stage: letterboxed crop + box geometry -> class probabilities
    (column 0: background). ONNX inputs ``crops`` [N,1,S,S], ``geometry`` [N,2]."""

    def __init__(self, num_classes: int, backbone: str = "tiny"):
        super().__init__()
        self.backbone = Backbone(backbone)
        c = self.backbone.channels
        self.head = nn.Sequential(nn.Linear(c + 2, 128), nn.ReLU(inplace=True), nn.Dropout(0.2),
                                  nn.Linear(128, num_classes + 1))

    def forward(self, crops, geometry):
        f = self.backbone(crops).mean(dim=(2, 3))
        return self.head(torch.cat([f, geometry], dim=1))


class DenseDetector(nn.Module):
    """Single-stage, anchor-free (FCOS-like), static output shapes: per stride-8 cell,
    K class scores (sigmoid) and the distances (pixels) to the box's four edges.
    Decoding and NMS happen outside the graph (rfdetect.postprocess.decode_dense)."""

    stride = 8

    def __init__(self, num_classes: int, backbone: str = "tiny", width: int = 96):
        super().__init__()
        self.backbone = Backbone(backbone)
        self.neck = nn.Sequential(_conv(self.backbone.channels, width, 1), _conv(width, width, 1))
        self.cls = nn.Conv2d(width, num_classes, 1)
        self.reg = nn.Conv2d(width, 4, 1)
        nn.init.constant_(self.cls.bias, -4.6)  # start at p=0.01: most cells are background

    def forward(self, tile):
        f = self.neck(self.backbone(tile))
        logits = self.cls(f)
        ltrb = torch.exp(self.reg(f).clamp(max=8.0)) * self.stride
        return logits, ltrb


def dense_targets(boxes: torch.Tensor, labels: torch.Tensor, num_classes: int, h: int, w: int, stride: int):
    """Cells whose centre lies in a box are its positives (the smallest box wins); a box
    thinner than a cell still gets the cell holding its centre. -> (cls [K,h,w], ltrb
    [4,h,w], positive mask [h,w])."""
    cls = torch.zeros(num_classes, h, w)
    reg = torch.zeros(4, h, w)
    best_area = torch.full((h, w), float("inf"))
    cy = (torch.arange(h, dtype=torch.float32) + 0.5) * stride
    cx = (torch.arange(w, dtype=torch.float32) + 0.5) * stride
    for (x0, y0, x1, y1), lab in zip(boxes.tolist(), labels.tolist()):
        inside = ((cy[:, None] >= y0) & (cy[:, None] <= y1)) & ((cx[None, :] >= x0) & (cx[None, :] <= x1))
        ci = min(h - 1, max(0, int((y0 + y1) / 2 // stride)))
        cj = min(w - 1, max(0, int((x0 + x1) / 2 // stride)))
        inside[ci, cj] = True
        area = (x1 - x0) * (y1 - y0)
        take = inside & (area < best_area)
        best_area[take] = area
        cls[:, take] = 0
        cls[lab, take] = 1
        reg[0][take] = (cx[None, :] - x0).expand(h, w)[take]
        reg[1][take] = (cy[:, None] - y0).expand(h, w)[take]
        reg[2][take] = (x1 - cx[None, :]).expand(h, w)[take]
        reg[3][take] = (y1 - cy[:, None]).expand(h, w)[take]
    return cls, reg.clamp(min=0.5), torch.isfinite(best_area)


def dense_loss(logits, ltrb, cls_t, reg_t, pos):
    """Sigmoid focal loss over all cells + IoU loss on the positives."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, cls_t, reduction="none")
    pt = p * cls_t + (1 - p) * (1 - cls_t)
    alpha = 0.25 * cls_t + 0.75 * (1 - cls_t)
    n_pos = pos.sum().clamp(min=1)
    focal = (alpha * (1 - pt) ** 2 * ce).sum() / n_pos
    if pos.any():
        pr = ltrb.permute(0, 2, 3, 1)[pos]
        tr = reg_t.permute(0, 2, 3, 1)[pos]
        inter = (torch.minimum(pr[:, 0], tr[:, 0]) + torch.minimum(pr[:, 2], tr[:, 2])) * \
                (torch.minimum(pr[:, 1], tr[:, 1]) + torch.minimum(pr[:, 3], tr[:, 3]))
        area_p = (pr[:, 0] + pr[:, 2]) * (pr[:, 1] + pr[:, 3])
        area_t = (tr[:, 0] + tr[:, 2]) * (tr[:, 1] + tr[:, 3])
        iou = inter / (area_p + area_t - inter).clamp(min=1e-6)
        box = -torch.log(iou.clamp(min=1e-6)).mean()
    else:
        box = ltrb.sum() * 0.0
    return focal + box


def faster_rcnn(num_classes: int, backbone: str, tile_height: int, width: int):
    """torchvision Faster R-CNN with a ResNet FPN backbone, anchors shaped for RF:
    long thin tones and short wide bursts need aspect ratios far from 1."""
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
    if backbone not in ("resnet18", "resnet34", "resnet50"):
        raise ValueError(f"faster_rcnn takes a resnet18/34/50 backbone, not {backbone!r}")
    body = resnet_fpn_backbone(backbone_name=backbone, weights=None, trainable_layers=5)
    ratios = ((0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0),) * 5
    anchors = AnchorGenerator(sizes=((16,), (32,), (64,), (128,), (256,)), aspect_ratios=ratios)
    return FasterRCNN(body, num_classes=num_classes + 1, rpn_anchor_generator=anchors,
                      min_size=tile_height, max_size=max(tile_height, width),
                      image_mean=[0.0, 0.0, 0.0], image_std=[1.0, 1.0, 1.0], box_detections_per_img=200)


class FasterRCNNExport(nn.Module):
    """Tile [1,1,H,W] -> boxes, scores, labels (0-based, as the card's labels)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, tile):
        out = self.model([tile[0].expand(3, -1, -1)])[0]
        return out["boxes"], out["scores"], out["labels"] - 1
