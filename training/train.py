"""train: the training loop, k-fold cross-validation, checkpoints, DDP.

Short and flat on purpose (after torchvision's references/detection). One ``fit``
trains one model on a list of tiles and validates on another, with: AdamW, linear
warm-up then cosine decay, gradient accumulation, gradient clipping, mixed precision
on CUDA, class-balanced sampling, augmentations (training/augment.py), checkpoints
chosen by validation AP50 (the mean of class-agnostic AP50 and mAP50 on the
validation tiles) with early stopping when it stops improving, a schedule stretched to
``--max-minutes`` when that is given, ``last.pt`` every epoch and ``best.pt`` at each
improvement (``--resume`` continues from ``last.pt``: same epoch,
optimiser, scheduler, scaler and RNG states), a metrics CSV, curve PNGs, TensorBoard
when installed. Under ``torchrun`` each process trains on its share of the tiles
(DistributedDataParallel: NCCL on GPUs, gloo on CPUs); rank 0 writes the files.
"""
from __future__ import annotations

import copy
import csv
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, WeightedRandomSampler

from .onnx_weights import CALIBRATION_TILES, export_card, export_path, init_from_export
from .progress import emit, progress_bar


@dataclass
class TrainConfig:
    arch: str = "two_stage"
    backbone: Optional[str] = None
    epochs: int = 100
    k_folds: int = 0
    batch_size: int = 4
    lr: float = 1e-4
    early_stop: int = 5
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    accum: int = 1
    clip: float = 10.0
    amp: bool = True  # used on CUDA only
    seed: int = 0
    overfit: int = 0
    max_minutes: float = 0.0
    device: str = "cpu"
    workers: int = 0
    progress: bool = True
    augment: tuple = ()
    balance: bool = True
    init: Optional[str] = None  # a checkpoint whose weights start the run (fresh schedule)
    # an exported --init model made at another FFT size, hop, window, pooling or width is accepted
    init_other_resolution: bool = False
    ema: float = 0.0  # epochs of steps the weight average spans (0: validate the raw weights)
    # layers that keep the weights the run starts from (FREEZE): "backbone" fine-tunes only what
    # turns features into boxes, so a fine-tune moves less of what the starting weights do
    freeze: str = "none"


FREEZE = ("none", "backbone")


def check_freeze(part: str, arch: str, init, resumable: bool) -> None:
    """One error for a --freeze that cannot work: an architecture without a backbone to
    freeze, or nothing to start the frozen layers from (no --init and no checkpoint to
    resume). The CLI asks before any work (``resumable``: --resume was given); ``fit`` again
    once it knows whether there is a checkpoint."""
    if part == "none":
        return
    if arch != "anchor_free":
        raise ValueError(f"--freeze {part} is anchor_free's only (--arch {arch})")
    if not init and not resumable:
        raise ValueError(f"--freeze {part}: give --init MODEL too (a frozen backbone of random weights "
                         f"would learn nothing)")


def freeze_layers(model: torch.nn.Module, part: str) -> list:
    """Stops training ``part`` of ``model`` (FREEZE): its weights get no gradient and its
    BatchNorm statistics stay as they are (:func:`keep_frozen`). -> the frozen modules."""
    if part not in FREEZE:
        raise ValueError(f"--freeze {part!r}: give one of {', '.join(FREEZE)}")
    if part == "none":
        return []
    layers = getattr(model, "backbone_layers", None)
    if layers is None:
        raise ValueError(f"--freeze {part}: only --arch anchor_free's layers are split into a backbone and "
                         f"what follows it ({type(model).__name__} are not)")
    frozen = list(layers())
    for m in frozen:
        for p in m.parameters():
            p.requires_grad_(False)
    return frozen


def keep_frozen(frozen: list) -> None:
    """Frozen layers in eval mode (after ``model.train()``): BatchNorm would otherwise move its
    running statistics with every batch, which changes what the frozen weights compute."""
    for m in frozen:
        m.eval()


def seed_everything(seed: int):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def distributed() -> tuple[int, int]:
    """(rank, world size); initialises the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() and os.environ.get("RFDETECT_DDP_BACKEND") != "gloo"
                                else "gloo")
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def resolve_device(name: str) -> torch.device:
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda: no CUDA GPU is visible to PyTorch here; use --device cpu")
        local = int(os.environ.get("LOCAL_RANK", "0"))
        return torch.device(name if ":" in name else f"cuda:{local}")
    return torch.device("cpu")


def split_folds(images: list[str], ds: dict, k: int, seed: int) -> list[tuple[list, list]]:
    """k folds, grouped by recording when there are at least k recordings (overlapping
    tiles of one recording in both train and validation would flatter the scores)."""
    rec_of = {im: im.rsplit("_", 1)[0] for im in images}
    groups = sorted(set(rec_of.values()))
    by_recording = len(groups) >= k
    units = groups if by_recording else sorted(images)
    random.Random(seed).shuffle(units)
    key = (lambda im: rec_of[im]) if by_recording else (lambda im: im)
    folds = []
    for f in range(k):
        val_units = set(units[f::k])
        val = [im for im in images if key(im) in val_units]
        folds.append(([im for im in images if key(im) not in val_units], val))
    return folds


def holdout(images: list[str], ds: dict, seed: int, frac: float = 0.15) -> tuple[list, list]:
    """Validation split: whole recordings when there are at least 3 (then the physical
    evaluation can run on them), else tiles."""
    rec_of = {im: im.rsplit("_", 1)[0] for im in images}
    groups = sorted(set(rec_of.values()))
    rng = random.Random(seed)
    if len(groups) >= 3:
        val_groups = set(rng.sample(groups, max(1, int(round(frac * len(groups))))))
        val = [im for im in images if rec_of[im] in val_groups]
    else:
        val = set(rng.sample(images, max(1, int(round(frac * len(images))))))
        val = [im for im in images if im in val]
    train = [im for im in images if im not in set(val)]
    return (train, val) if train and val else (images, images)


def _lr_lambda(warmup: int, schedule: dict):
    """Warm-up then cosine decay to 5 %; ``schedule["steps"]`` may be changed later (the
    schedule stretched to a time budget)."""
    def f(step):
        if step < warmup:
            return (step + 1) / warmup
        p = min(1.0, (step - warmup) / max(1, schedule["steps"] - warmup))
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * p))
    return f


def _loader(arch, dataset, cfg, shuffle, rank, world):
    g = torch.Generator()
    g.manual_seed(cfg.seed)
    sampler = DistributedSampler(dataset, world, rank, shuffle=shuffle, seed=cfg.seed) if world > 1 else None
    if sampler is None and shuffle and cfg.balance and hasattr(dataset, "sample_weights"):
        sampler = WeightedRandomSampler(torch.as_tensor(dataset.sample_weights(), dtype=torch.double),
                                        len(dataset), replacement=True, generator=g)
    return DataLoader(dataset, batch_size=cfg.batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
                      collate_fn=arch.collate, num_workers=cfg.workers, generator=g, drop_last=False)


def _val_loss(arch, model, loader, device):
    was = model.training
    total, n = 0.0, 0
    with torch.no_grad():
        for batch in loader:
            if arch.name == "faster_rcnn":  # torchvision returns losses only in train mode
                model.train()
            else:
                model.eval()
            total += arch.loss(model, batch, device).item()
            n += 1
    model.train(was)
    return total / max(n, 1)


def validation_ap(arch, model, device, ds, images, with_loss: bool = False) -> dict:
    """AP50 on validation tiles (pixel IoU: within a tile the same as seconds x Hz), and the
    class-agnostic precision/recall/F1 at the score threshold of the best F1. ``with_loss``
    (architectures with ``predict_with_loss``): also "loss", the mean loss per tile, from the
    same forward passes."""
    from .archs import label_name, load_tile
    from .detection_metrics import best_f1_threshold
    from .evaluate import MATCH_IOU, _pix_rec, score_groups
    was = model.training
    model.eval()
    truth, found, losses = [], [], []
    for im in images:
        tile, boxes, labs = load_tile(ds, im)
        if with_loss:
            loss, (pb, ps, pl) = arch.predict_with_loss(model, tile, boxes, labs, device)
            losses.append(loss)
        else:
            pb, ps, pl = arch.predict(model, tile, device)
        truth.append([_pix_rec(b, arch.labels[int(lab)]) for b, lab in zip(boxes, labs)])
        found.append([dict(_pix_rec(b, label_name(arch.labels, lab)), score=float(sc)) for b, sc, lab in zip(pb, ps, pl)])
    model.train(was)
    threshold, best_f1 = best_f1_threshold(truth, found, MATCH_IOU)
    scores = score_groups(truth, found, arch.labels, threshold)
    r = dict(scores["ap50"], best_f1_threshold=threshold, best_f1=best_f1,
             at_best_f1=scores["class_agnostic"])
    parts = [v for v in (r["class_agnostic_AP"], r["mAP"]) if v is not None]
    r["select"] = float(np.mean(parts)) if parts else 0.0
    if with_loss:
        r["loss"] = float(np.mean(losses)) if losses else 0.0
    return r


# the label rule's class_confidence values rfdetect-train run tries on the validation tiles
CLASS_CONFIDENCE_CHOICES = (0.2, 0.3, 0.4, 0.5)


def choose_class_confidence(arch, model, device, ds, images) -> tuple:
    """-> (the one of CLASS_CONFIDENCE_CHOICES with the best validation AP, {choice:
    validation_ap}); ties go to the larger. "Best" is the mean of class-agnostic AP50 and
    mAP50: lower values name more detections, each named one scored objectness x class
    probability, so mAP rises while class-agnostic AP can fall. On the classic tuning
    recordings the 24-recording model's mAP50 went 0.67 -> 0.75 at 0.35, its class-agnostic
    AP50 0.85 -> 0.83. Leaves ``arch.class_confidence`` as it found it."""
    was = arch.class_confidence
    tried = {}
    try:
        for c in CLASS_CONFIDENCE_CHOICES:
            arch.class_confidence = c
            tried[c] = validation_ap(arch, model, device, ds, images)
    finally:
        arch.class_confidence = was
    return max(CLASS_CONFIDENCE_CHOICES, key=lambda c: (tried[c]["select"], c)), tried


def require_init_file(path) -> Path:
    """``--init``'s checkpoint or exported model file, or FileNotFoundError (rfdetect-train
    run asks before it spends minutes preparing tiles)."""
    exported = export_path(path)
    if exported is not None:
        if not exported.is_file():
            raise FileNotFoundError(f"--init {path}: no such model file ({exported})")
        return exported
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--init {path}: no such checkpoint (a best.pt or last.pt of an earlier run, "
                                f"an anchor_free model.onnx, or 'default')")
    return path


def load_init(path, arch) -> dict:
    """The checkpoint ``--init`` names, checked against this run: same architecture,
    backbone and labels (in order), or one error naming every difference."""
    path = require_init_file(path)
    try:
        # weights_only=False: checkpoints hold the run's history and config (as --resume's);
        # load only checkpoints you made or trust, as with any pickle
        ck = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # pickle, zip or torch's own errors
        raise ValueError(f"--init {path}: not a training checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(ck, dict) or "model" not in ck:
        raise ValueError(f"--init {path}: not a training checkpoint (no model weights in it; "
                         f"model.pt is an export: use work/runs/final/best.pt, or the model.onnx beside it)")
    problems = [f"{key} {ck.get(key)!r} (this run: {mine!r})"
                for key, mine in (("arch", arch.name), ("backbone", arch.backbone), ("labels", list(arch.labels)))
                if (list(ck.get(key) or []) if key == "labels" else ck.get(key)) != mine]
    if problems:
        raise ValueError(f"--init {path}: the checkpoint does not fit this run: " + "; ".join(problems))
    return ck


class WeightAverage:
    """An exponential moving average of a model's weights and BatchNorm statistics, the
    weights that are validated, chosen and exported when ``--ema`` is on. Why: with
    batches of two tiles the weights jump from step to step, and the validation mAP50 of
    consecutive epochs of one run moved by 0.1-0.2 (docs/training.md); an average over
    the last ``window`` steps is a steadier model to judge and to ship. Its decay rises
    from 0 over the first ``warmup`` steps so that the random start fades out."""

    def __init__(self, model: torch.nn.Module, window: float, warmup: float, frozen: tuple = ()):
        if not window >= 1:
            raise ValueError(f"weight average: window must be at least one step, not {window}")
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.decay = 1.0 - 1.0 / window
        self.warmup = max(float(warmup), 1.0)
        self.updates = 0
        # the state of frozen layers (freeze_layers) is copied, not averaged: an average of
        # equal values is not always bit-equal to them
        prefixes = tuple(name + "." for name, m in model.named_modules() if any(m is f for f in frozen))
        self.frozen = {k for k in self.model.state_dict() if k.startswith(prefixes)} if prefixes else set()

    @torch.no_grad()
    def update(self, model: torch.nn.Module):
        self.updates += 1
        d = self.decay * (1.0 - math.exp(-self.updates / self.warmup))
        current = model.state_dict()
        for name, v in self.model.state_dict().items():
            if v.dtype.is_floating_point and name not in self.frozen:
                v.mul_(d).add_(current[name].detach(), alpha=1.0 - d)
            else:  # BatchNorm's batch counter
                v.copy_(current[name])


# with --max-minutes, the share of the fitted schedule trained before early stopping may end it
MIN_SCHEDULE_FRACTION = 0.75


def fit(arch, ds, train_images, val_images, cfg: TrainConfig, run_dir: Path, resume: bool = False,
        epochs: Optional[int] = None, early_stop: bool = True) -> dict:
    """Train one model; -> {"best_epoch", "best_val_ap50", "best_val_loss", "epochs_run", "checkpoint"}."""
    rank, world = distributed()
    device = resolve_device(cfg.device)
    epochs = epochs or cfg.epochs
    run_dir = Path(run_dir)
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)
    arch.augment = tuple(cfg.augment)
    train_set = arch.dataset(ds, train_images, train=True)
    val_set = arch.dataset(ds, val_images)
    train_loader = _loader(arch, train_set, cfg, True, rank, world)
    val_loader = _loader(arch, val_set, cfg, False, 0, 1)
    model = arch.build().to(device)
    if device.type == "cpu" and arch.channels_last:
        # NHWC convolutions: oneDNN's layout on the CPU (docs/training.md, "Training speed
        # on the CPU"); the weights keep their values, and checkpoints load into either layout
        model = model.to(memory_format=torch.channels_last)
    check_freeze(cfg.freeze, arch.name, cfg.init, resume and (run_dir / "last.pt").exists())
    frozen = freeze_layers(model, cfg.freeze)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                            weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, math.ceil(len(train_loader) / cfg.accum))
    schedule = {"steps": steps_per_epoch * epochs}
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(min(cfg.warmup_steps, steps_per_epoch * 2), schedule))
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    patience = cfg.early_stop
    # with --max-minutes: no early stop before this epoch (set below from the fitted schedule)
    min_epochs = 0
    start_epoch, best, best_epoch, stale, history = 1, -1.0, 0, 0, []
    late = False  # in the schedule's last quarter, where the checkpoint is chosen (--max-minutes)
    best_loss = float("inf")
    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"
    if cfg.init and not (resume and last_path.exists()):
        exported = export_path(cfg.init)
        if exported is not None:
            from .archs import load_tile
            line = init_from_export(exported, arch, model,
                                    [load_tile(ds, im)[0] for im in train_images[:CALIBRATION_TILES]],
                                    other_resolution=cfg.init_other_resolution, card_file=export_card(cfg.init))
        else:
            ck = load_init(cfg.init, arch)
            model.load_state_dict(ck["model"])
            line = f"train: starting from the weights of {cfg.init} (its epoch {ck.get('epoch')})"
        if rank == 0:
            print(f"{line}; new schedule, {epochs} epochs")
    # the average starts from the weights the run starts from (--init's included)
    ema = WeightAverage(model, max(1.0, cfg.ema * steps_per_epoch), steps_per_epoch, frozen) if cfg.ema else None
    if resume and last_path.exists():
        ck = torch.load(last_path, map_location=device, weights_only=False)
        was = (ck.get("config") or {}).get("freeze", "none")
        if was != cfg.freeze:
            raise ValueError(f"--resume: {last_path} was trained with --freeze {was}, this run asks for "
                             f"--freeze {cfg.freeze}; resume with --freeze {was}, or start a new run with --init")
        # "model" holds the validated weights (the average when --ema is on), "raw_model"
        # then the weights the optimiser was moving
        model.load_state_dict(ck.get("raw_model", ck["model"]))
        if ema:
            ema.model.load_state_dict(ck["model"])
            ema.updates = ck.get("ema_updates", 0)
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        scaler.load_state_dict(ck["scaler"])
        start_epoch, best, best_epoch, stale, history = (ck["epoch"] + 1, ck["best"], ck["best_epoch"],
                                                         ck["stale"], ck["history"])
        late = ck.get("late", False)
        epochs = max(epochs, ck.get("epochs", epochs))
        schedule["steps"] = steps_per_epoch * epochs
        torch.set_rng_state(ck["rng"])
        if rank == 0:
            print(f"train: resumed from {last_path} at epoch {start_epoch}")
    ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    tb = _tensorboard(run_dir) if rank == 0 else None
    t_start = time.monotonic()
    epoch = start_epoch
    while epoch <= epochs:
        if world > 1:
            train_loader.sampler.set_epoch(epoch)
        ddp.train()
        keep_frozen(frozen)
        t0, total, n = time.monotonic(), 0.0, 0
        bar = progress_bar(train_loader, enable=cfg.progress and rank == 0, desc=f"epoch {epoch}/{epochs}")
        opt.zero_grad(set_to_none=True)
        t_step = time.monotonic()
        for i, batch in enumerate(bar):
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
                loss = arch.loss(ddp, batch, device)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"epoch {epoch}: the loss became {float(loss)}; lower --lr or check the data")
            scaler.scale(loss / cfg.accum).backward()
            if (i + 1) % cfg.accum == 0 or i + 1 == len(train_loader):
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
                sched.step()
                if ema:
                    ema.update(model)
            total += loss.item()
            n += 1
            bar.set_postfix(loss=f"{total / n:.4f}")
            if rank == 0 and (time.monotonic() - t_step > 1.0 or i + 1 == len(train_loader)):
                t_step = time.monotonic()
                emit("step", run=run_dir.name, epoch=epoch, epochs=epochs, step=i + 1, steps=len(train_loader),
                     loss=round(total / n, 6))
        train_loss = total / max(n, 1)
        if world > 1:
            t = torch.tensor([train_loss], device=device)
            dist.all_reduce(t)
            train_loss = float(t) / world
        judged = ema.model if ema else model
        if hasattr(arch, "predict_with_loss"):
            ap = validation_ap(arch, judged, device, ds, val_images, with_loss=True)
            val_loss = ap["loss"]
        else:
            val_loss = _val_loss(arch, judged, val_loader, device)
            ap = validation_ap(arch, judged, device, ds, val_images)
        row = {"epoch": epoch, "train_loss": round(train_loss, 6), "val_loss": round(val_loss, 6),
               "val_ap50": round(ap["class_agnostic_AP"] or 0.0, 4), "val_map50": round(ap["mAP"] or 0.0, 4),
               "val_precision": ap["at_best_f1"]["precision"], "val_recall": ap["at_best_f1"]["recall"],
               "val_f1": ap["at_best_f1"]["f1"],
               "lr": opt.param_groups[0]["lr"], "seconds": round(time.monotonic() - t0, 2)}
        history.append(row)
        best_loss = min(best_loss, val_loss)
        if cfg.max_minutes and early_stop:
            # the schedule follows the time budget: as many epochs as fit in it, re-planned
            # every epoch from the median epoch time (a shared machine's pace changes)
            per_epoch = float(np.median([h["seconds"] for h in history[-5:]]))
            left = cfg.max_minutes * 60 - (time.monotonic() - t_start)
            fit_epochs = max(epoch, epoch + int(left / max(per_epoch, 1e-3)))
            if fit_epochs != epochs and rank == 0 and (epoch == start_epoch or abs(fit_epochs - epochs) > 1):
                print(f"train: --max-minutes {cfg.max_minutes:g}: {per_epoch:.0f} s per epoch -> "
                      f"{fit_epochs} epochs (was {epochs})")
            epochs = fit_epochs
            schedule["steps"] = steps_per_epoch * epochs
            # validation AP on a few recordings is noisy: judge a plateau over a quarter of the run
            patience = max(cfg.early_stop, epochs // 4)
            # and not while the learning rate is still high: a dozen validation tiles saturate
            # (AP50 ~0.95) long before the model stops improving on new data (docs/training.md,
            # "Early stopping and the schedule")
            min_epochs = int(MIN_SCHEDULE_FRACTION * epochs)
            if epoch >= min_epochs and not late:
                late = True
                # nor is a checkpoint chosen from then: the best so far came at a high learning
                # rate, when the same tiles' AP said as much as later; the last quarter's best
                # is the model (docs/training.md, "Choosing the checkpoint")
                best, stale = -1.0, 0
        # AP, not loss, picks the checkpoint: the loss rewards confident boxes, AP rewards
        # finding the signals
        improved = ap["select"] > best + 1e-6
        if improved:
            best, best_epoch, stale = ap["select"], epoch, 0
        else:
            stale += 1
        if rank == 0:
            ck = {"model": judged.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                  "scaler": scaler.state_dict(), "epoch": epoch, "best": best, "best_epoch": best_epoch,
                  "stale": stale, "late": late, "history": history, "rng": torch.get_rng_state(),
                  "config": asdict(cfg),
                  "epochs": epochs,
                  "arch": arch.name, "backbone": arch.backbone, "labels": arch.labels}
            if ema:
                ck.update(raw_model=model.state_dict(), ema_updates=ema.updates)
            _save(ck, last_path)
            if improved or not early_stop:
                _save(ck, best_path)
            _write_metrics(run_dir, history)
            emit("epoch", run=run_dir.name, epochs=epochs, best=improved, **row)
            if tb:
                for k in ("train_loss", "val_loss", "val_ap50", "val_map50", "lr"):
                    tb.add_scalar(k, row[k], epoch)
            print(f"epoch {epoch}: train {train_loss:.4f}  val {val_loss:.4f}  AP50 {row['val_ap50']:.3f}  "
                  f"mAP50 {row['val_map50']:.3f}  {row['seconds']} s  (of {epochs})" + ("  *best" if improved else ""),
                  flush=True)
        if early_stop and stale >= patience and epoch >= min_epochs:
            if rank == 0:
                print(f"train: early stop after {stale} epochs without a better validation AP50 "
                      f"(best epoch {best_epoch})")
            break
        if cfg.max_minutes and time.monotonic() - t_start > cfg.max_minutes * 60:
            if rank == 0:
                print(f"train: --max-minutes {cfg.max_minutes} reached after epoch {epoch}")
            break
        epoch += 1
    if rank == 0:
        _plot_curves(run_dir, history)
    if tb:
        tb.close()
    return {"best_epoch": best_epoch, "best_val_ap50": best, "best_val_loss": best_loss, "epochs_run": len(history),
            "checkpoint": str(best_path)}


def _save(obj, path: Path):
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _write_metrics(run_dir: Path, history: list):
    tmp = run_dir / "metrics.csv.tmp"
    with open(tmp, "w", newline="") as f:
        # the union of the rows' columns: a run resumed from an older checkpoint has rows
        # without the columns added since
        w = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for row in history for k in row)), restval="")
        w.writeheader()
        w.writerows(history)
    os.replace(tmp, run_dir / "metrics.csv")


def _plot_curves(run_dir: Path, history: list):
    if not history:
        return
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ep = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(ep, [h["train_loss"] for h in history], label="train")
    ax.plot(ep, [h["val_loss"] for h in history], label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(run_dir / "loss.png", dpi=100)
    plt.close(fig)


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))


def train(arch, ds, cfg: TrainConfig, out_dir, resume: bool = False) -> dict:
    """k-fold (when cfg.k_folds > 1) then the final model -> summary (train.json)."""
    rank, _ = distributed()
    out_dir = Path(out_dir)
    images = list(ds["images"])
    if cfg.overfit:
        images = images[:cfg.overfit]
        folds, final_train, final_val, final_epochs = [], images, images, cfg.epochs
        if rank == 0:
            print(f"train: --overfit {cfg.overfit}: training and validating on the same {len(images)} tiles")
    else:
        folds = split_folds(images, ds, cfg.k_folds, cfg.seed) if cfg.k_folds > 1 else []
        final_train, final_val = holdout(images, ds, cfg.seed)
        final_epochs = cfg.epochs
    _check_labels(arch, ds, final_train)
    fold_results = []
    for f, (tr, va) in enumerate(folds):
        if rank == 0:
            print(f"train: fold {f + 1}/{len(folds)}: {len(tr)} train / {len(va)} validation tiles")
        fold_results.append(fit(arch, ds, tr, va, cfg, out_dir / f"fold{f + 1}", resume))
    if fold_results:
        # the final model trains as long as the folds found useful, on all but the
        # held-out tiles, which stay unseen so that evaluate's numbers are honest
        final_epochs = max(1, int(np.median([r["best_epoch"] for r in fold_results])))
        if rank == 0:
            print(f"train: final model on {len(final_train)} tiles for {final_epochs} epochs "
                  f"(median best epoch of {len(folds)} folds); {len(final_val)} tiles held out")
    final = fit(arch, ds, final_train, final_val, cfg, out_dir / "final", resume, epochs=final_epochs,
                early_stop=not fold_results)
    summary = {"arch": arch.name, "backbone": arch.backbone, "labels": arch.labels, "config": asdict(cfg),
               "folds": fold_results, "final": final, "train_tiles": final_train, "val_tiles": final_val,
               "cv_val_loss": float(np.mean([r["best_val_loss"] for r in fold_results])) if fold_results else None}
    if rank == 0:
        (out_dir / "train.json").write_text(json.dumps(summary, indent=1))
    return summary


def _check_labels(arch, ds, train_images):
    """A label with no box in the training tiles cannot be learnt: say which."""
    from .prepare import load_entry
    seen = set()
    for im in train_images:
        seen.update(b["label"] for b in load_entry(ds, im)["bboxes"])
    missing = [lab for lab in arch.labels if lab not in seen]
    if missing:
        print(f"train: WARNING: labels {missing} have no box in the training tiles; the model cannot learn "
              f"them (add recordings with them or remove them)")
