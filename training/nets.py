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
    Decoding and NMS happen outside the graph (rfdetect.inference.postprocess.decode_dense)."""

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
    # BatchNorm, not torchvision's default FrozenBatchNorm2d: with random weights a frozen
    # norm is the identity, and the network would train from scratch with no normalisation
    body = resnet_fpn_backbone(backbone_name=backbone, weights=None, trainable_layers=5, norm_layer=nn.BatchNorm2d)
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


# --------------------------------------------------------------------------- anchor_free
def _dw_sep(cin, cout, stride=1):
    """Depthwise 3x3 + pointwise 1x1: most of a 3x3 conv's reach at a fraction of its cost."""
    return nn.Sequential(nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin),
                         nn.ReLU(inplace=True), nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class _Residual(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.body = _dw_sep(c, c)

    def forward(self, x):
        return x + self.body(x)


class AnchorFreeDetector(nn.Module):
    """Single-stage, anchor-free detector made for spectrogram tiles (``anchor_free``).

    Backbone to stride 32 x 64 (rows x columns; with the global-context term every
    output cell sees the whole tile: tones are hundreds of rows tall), a top-down
    feature pyramid back to cells of 4 rows x 8 columns, and one head per cell. Time
    gets the finer cell because bursts of one emitter two or three rows apart must
    stay two boxes:

    * objectness: is a signal centred here, trained with a quality focal loss whose
      target is the IoU of the cell's box with the signal's, so the score also ranks
      box quality;
    * class probabilities (softmax over the card's labels): separate from objectness,
      so a signal whose class is uncertain is still found (reported as ``signal``);
    * the box: centre offset from the cell centre in cells and log width/height, so
      a box one pixel wide (a tone) or ten cells away from the centre is expressible.

    Outputs are static ([1,1,h,w], [1,K,h,w], [1,4,h,w] as x0,y0,x1,y1 pixels); the
    threshold, the label rule and NMS are done outside the graph
    (rfdetect.inference.postprocess.decode_anchor_free), the same for every backend.
    """

    stride_y, stride_x = 4, 8
    channels = (8, 24, 48, 64, 96, 128)
    fpn = 64
    max_log_size = 7.0  # exp(7) * 8 = 8773 px: larger than any tile

    def __init__(self, num_classes: int):
        super().__init__()
        c = self.channels
        self.stem = nn.Sequential(_conv(1, c[0], 2), _conv(c[0], c[1], 2))
        self.c3 = nn.Sequential(_conv(c[1], c[2], (1, 2)), _Residual(c[2]))
        self.c4 = nn.Sequential(_conv(c[2], c[3], 2), _Residual(c[3]), _Residual(c[3]))
        self.c5 = nn.Sequential(_conv(c[3], c[4], 2), _Residual(c[4]), _Residual(c[4]))
        self.c6 = nn.Sequential(_conv(c[4], c[5], 2), _Residual(c[5]), _Residual(c[5]))
        self.context = nn.Conv2d(c[5], c[5], 1)
        self.lateral = nn.ModuleList([nn.Conv2d(ch, self.fpn, 1) for ch in c[2:]])
        self.smooth = nn.ModuleList([_dw_sep(self.fpn, self.fpn) for _ in c[2:5]])
        self.tower = nn.Sequential(_dw_sep(self.fpn, self.fpn), _dw_sep(self.fpn, self.fpn))
        self.obj = nn.Conv2d(self.fpn, 1, 1)
        self.cls = nn.Conv2d(self.fpn, num_classes, 1)
        self.box = nn.Conv2d(self.fpn, 4, 1)
        nn.init.constant_(self.obj.bias, -4.6)  # p=0.01 at the start: most cells hold no signal centre
        nn.init.zeros_(self.box.weight)
        nn.init.zeros_(self.box.bias)

    def raw(self, tile):
        """-> objectness logits [B,1,h,w], class logits [B,K,h,w], box parameters [B,4,h,w]."""
        c3 = self.c3(self.stem(tile))
        c4 = self.c4(c3)
        c5 = self.c5(c4)
        c6 = self.c6(c5)
        p = self.lateral[3](c6 + self.context(c6.mean(dim=(2, 3), keepdim=True)))
        for feat, lat, smooth in ((c5, self.lateral[2], self.smooth[2]), (c4, self.lateral[1], self.smooth[1]),
                                  (c3, self.lateral[0], self.smooth[0])):
            p = smooth(lat(feat) + F.interpolate(p, size=feat.shape[-2:], mode="nearest"))
        f = self.tower(p)
        return self.obj(f), self.cls(f), self.box(f)

    def decode_boxes(self, params):
        """Box parameters [B,4,h,w] -> x0,y0,x1,y1 pixels [B,4,h,w]."""
        b, _, h, w = params.shape
        sy, sx = self.stride_y, self.stride_x
        gy = (torch.arange(h, dtype=params.dtype, device=params.device) + 0.5).view(1, h, 1)
        gx = (torch.arange(w, dtype=params.dtype, device=params.device) + 0.5).view(1, 1, w)
        cx = (gx + params[:, 0]) * sx
        cy = (gy + params[:, 1]) * sy
        half_w = torch.exp(params[:, 2].clamp(max=self.max_log_size)) * (sx / 2)
        half_h = torch.exp(params[:, 3].clamp(max=self.max_log_size)) * (sy / 2)
        return torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dim=1)

    def backbone_layers(self) -> list:
        """The convolutional stages (``--freeze backbone``); the feature pyramid, tower and
        heads after them are not."""
        return [self.stem, self.c3, self.c4, self.c5, self.c6]

    def forward(self, tile):
        obj, cls, params = self.raw(tile)
        return obj, cls, self.decode_boxes(params)


# a cell is a positive of a box when its centre is within this fraction of the box's
# half-size from the box centre, per axis, or in the cell holding the centre
CENTRE_RADIUS = 0.5


def anchor_free_targets(boxes: torch.Tensor, h: int, w: int, stride_y: int, stride_x: int):
    """Target assignment for one tile -> box index per cell [h,w] (-1: none).

    Per axis a cell is inside a box's centre region when its centre is within
    CENTRE_RADIUS x half the box's size of the box centre, or when it is the cell that
    holds the centre: so a box thinner than a cell (a tone one column wide, a burst
    two rows tall) still has its positive cell, and a box hundreds of rows tall has a
    column of them. Where regions overlap the smallest box wins. A box left with no
    cell (two short bursts whose centres share a cell) takes the nearest free cell
    above or below it: the box offset reaches it, and both bursts stay detectable."""
    assign = torch.full((h, w), -1, dtype=torch.long)
    if len(boxes) == 0:
        return assign
    best_area = torch.full((h, w), float("inf"))
    cy = (torch.arange(h, dtype=torch.float32) + 0.5) * stride_y
    cx = (torch.arange(w, dtype=torch.float32) + 0.5) * stride_x
    areas = (boxes[:, 2] - boxes[:, 0]).clamp(min=1e-3) * (boxes[:, 3] - boxes[:, 1]).clamp(min=1e-3)
    centres = []
    for k in torch.argsort(areas, descending=True).tolist():
        x0, y0, x1, y1 = boxes[k].tolist()
        bx, by = (x0 + x1) / 2, (y0 + y1) / 2
        in_y = (cy - by).abs() <= CENTRE_RADIUS * (y1 - y0) / 2
        in_x = (cx - bx).abs() <= CENTRE_RADIUS * (x1 - x0) / 2
        ci, cj = min(h - 1, max(0, int(by // stride_y))), min(w - 1, max(0, int(bx // stride_x)))
        in_y[ci] = True
        in_x[cj] = True
        region = in_y[:, None] & in_x[None, :]
        take = region & (areas[k] <= best_area)
        best_area[take] = areas[k]
        assign[take] = k
        centres.append((k, ci, cj, by))
    for k, ci, cj, by in centres:
        if (assign == k).any():
            continue
        for i in sorted(range(max(0, ci - 2), min(h, ci + 3)), key=lambda i: abs((i + 0.5) * stride_y - by)):
            if assign[i, cj] < 0:
                assign[i, cj] = k
                break
    return assign


def _giou(a, b):
    """Generalised IoU of paired boxes [N,4] -> ([N] IoU, [N] GIoU)."""
    ix = (torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0])).clamp(min=0)
    iy = (torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1])).clamp(min=0)
    inter = ix * iy
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    union = (area_a + area_b - inter).clamp(min=1e-6)
    iou = inter / union
    ex = torch.maximum(a[:, 2], b[:, 2]) - torch.minimum(a[:, 0], b[:, 0])
    ey = torch.maximum(a[:, 3], b[:, 3]) - torch.minimum(a[:, 1], b[:, 1])
    hull = (ex * ey).clamp(min=1e-6)
    return iou, iou - (hull - union) / hull


def _box_param_l1(pred, gt, stride_y, stride_x):
    """L1 distance of boxes [N,4] as the head parametrises them (centre in cells, log
    size in cells). GIoU alone moves a box slowly while it is far smaller than its
    target (a 4x8 px start against a tone hundreds of rows tall); log-size L1 gives
    every box the same, direct pull from the first step."""
    def params(b):
        w = (b[:, 2] - b[:, 0]).clamp(min=1e-2)
        h = (b[:, 3] - b[:, 1]).clamp(min=1e-2)
        return torch.stack([(b[:, 0] + b[:, 2]) / (2 * stride_x), (b[:, 1] + b[:, 3]) / (2 * stride_y),
                            torch.log(w / stride_x), torch.log(h / stride_y)], dim=1)
    return (params(pred) - params(gt)).abs().sum(dim=1)


def anchor_free_loss(obj_logits, cls_logits, pred_boxes, gt_boxes, gt_labels, stride_y, stride_x,
                     box_weight=2.0, class_per_box=False, target_in_tile=False):
    """Quality focal loss on objectness (target: IoU of the cell's box with its signal,
    0 elsewhere), cross-entropy on the class at positive cells, GIoU on their boxes.
    ``class_per_box``: the class loss is the cross-entropy of each signal's mean class
    probability over its positive cells, so cells that cannot see what names it may stay
    unsure (the decode's class region averages the same cells).
    ``target_in_tile``: the objectness target is the IoU of the cell's box cut to the tile,
    as the Detector reports it (tile_detector.to_records), so a box that runs past the edge
    of a tile its signal runs past too (a carrier, a key-up, a tone) is not scored down for
    rows no one will see."""
    b, k, h, w = cls_logits.shape
    obj_t = torch.zeros_like(obj_logits[:, 0])
    pos_pred, pos_gt, pos_lab, pos_idx, pos_box = [], [], [], [], []
    for i in range(b):
        assign = anchor_free_targets(gt_boxes[i].cpu(), h, w, stride_y, stride_x).to(obj_logits.device)
        ii, jj = torch.nonzero(assign >= 0, as_tuple=True)
        if len(ii):
            a = assign[ii, jj]
            pos_pred.append(pred_boxes[i, :, ii, jj].t())
            pos_gt.append(gt_boxes[i].to(obj_logits.device)[a])
            pos_lab.append(gt_labels[i].to(obj_logits.device)[a])
            pos_box.append(a)
            pos_idx.append((torch.full_like(ii, i), ii, jj))
    if pos_pred:
        pred, gt = torch.cat(pos_pred), torch.cat(pos_gt)
        iou, giou = _giou(pred, gt)
        if target_in_tile:
            tile = torch.tensor([w * stride_x, h * stride_y], dtype=pred.dtype, device=pred.device).repeat(2)
            iou, _ = _giou(torch.minimum(pred.clamp(min=0), tile), gt)
        bi = torch.cat([p[0] for p in pos_idx])
        yi = torch.cat([p[1] for p in pos_idx])
        xi = torch.cat([p[2] for p in pos_idx])
        obj_t[bi, yi, xi] = iou.detach().clamp(min=0.0)
        n_pos = max(1.0, float(len(iou)))
        box_loss = (1 - giou).sum() / n_pos + _box_param_l1(pred, gt, stride_y, stride_x).sum() / n_pos
        if class_per_box:
            gid = bi * (1 + int(max(len(g) for g in gt_boxes))) + torch.cat(pos_box)
            groups, inv = torch.unique(gid, return_inverse=True)
            p = torch.softmax(cls_logits[bi, :, yi, xi], dim=1)
            mean_p = torch.zeros(len(groups), k, device=p.device, dtype=p.dtype).index_add_(0, inv, p)
            mean_p = mean_p / torch.bincount(inv, minlength=len(groups)).to(p.dtype)[:, None]
            lab = torch.zeros(len(groups), dtype=torch.long, device=p.device).scatter_(0, inv, torch.cat(pos_lab))
            cls_loss = F.nll_loss(torch.log(mean_p.clamp(min=1e-8)), lab, reduction="sum") / len(groups)
        else:
            cls_loss = F.cross_entropy(cls_logits[bi, :, yi, xi], torch.cat(pos_lab), reduction="sum") / n_pos
    else:
        n_pos = 1.0
        box_loss = pred_boxes.sum() * 0.0
        cls_loss = cls_logits.sum() * 0.0
    logit = obj_logits[:, 0]
    p = torch.sigmoid(logit)
    qfl = F.binary_cross_entropy_with_logits(logit, obj_t, reduction="none") * (p - obj_t).abs().pow(2.0)
    obj_loss = qfl.sum() / max(1.0, float(obj_t.sum()))
    return obj_loss + cls_loss + box_weight * box_loss
