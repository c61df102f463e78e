"""``rfdetect-train``: prepare -> auto-tune -> train -> evaluate -> export.

    rfdetect-train run --data DIR --out MODEL_DIR [--arch ARCH] [--epochs N]
                       [--max-minutes M] [--device cpu|cuda]

leaves MODEL_DIR/model.onnx and MODEL_DIR/model.card.json, ready for
``rfdetect detect REC --model MODEL_DIR/model.onnx``. Each stage is its own
subcommand; ``run`` keeps its work under MODEL_DIR/work/ (tiles, runs, report).
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

EXIT_ERROR = 2


def _spectrogram_args(p):
    from gnuradio.rfdetect.apps.cli import _add_spectrogram_args
    _add_spectrogram_args(p)
    g = p.add_argument_group("tiles (the Detector must use the same)")
    g.add_argument("--tile-height", type=int, default=1024)
    g.add_argument("--overlap", type=int, default=128)


def _labels_arg(p, what="train on these labels only (comma-separated); annotations of the others stay unboxed, "
                         "so the model learns them as background: a detector for one family among many "
                         "(default: every label in the recordings)"):
    p.add_argument("--labels", type=_label_list, default=None, metavar="L1,L2", help=what)


def _label_list(v: str) -> tuple:
    labels = tuple(dict.fromkeys(x.strip() for x in v.split(",") if x.strip()))
    if not labels:
        raise argparse.ArgumentTypeError(f"{v!r}: give comma-separated labels, say wifi,bt")
    return labels


def _at_least_zero(convert, what: str):
    """An argparse type: ``convert`` of the text, refused (one usage error saying
    ``what`` to give) when it does not parse or is below 0 (NaN included)."""
    def parse(v: str):
        try:
            x = convert(v)
        except ValueError:
            x = -1
        if not x >= 0:
            raise argparse.ArgumentTypeError(f"{v!r}: give {what}")
        return x
    return parse


def _jobs_arg(p):
    p.add_argument("--jobs", type=_at_least_zero(int, "a number of processes >= 0 (0: one per core)"), default=1,
                   metavar="N", help="processes that read the recordings into tiles (0: one per core; default 1); "
                                     "the tiles are the same whatever N")


# docs/training.md, "Choosing the checkpoint, and a weight average"
DEFAULT_EMA_EPOCHS = 2.0


def _train_args(p):
    from .archs import ARCHS, DEFAULT_ARCH, OBJECTNESS_TARGETS
    from .augment import AUGMENTATIONS
    from .nets import BACKBONES
    g = p.add_argument_group("training (unset values come from the auto-tune table)")
    g.add_argument("--arch", default=DEFAULT_ARCH, choices=ARCHS,
                   help=f"default {DEFAULT_ARCH} (docs/training.md compares them)")
    g.add_argument("--backbone", choices=BACKBONES,
                   help="two_stage/dense: default tiny; faster_rcnn: default resnet18; anchor_free has its own")
    g.add_argument("--augment", default="auto",
                   help=f"augmentations of training tiles: auto (all for anchor_free, none for the others: "
                        f"measured only for anchor_free), all, none, or a comma-separated subset of "
                        f"{','.join(AUGMENTATIONS)} (training/augment.py)")
    g.add_argument("--no-balance", action="store_true", help="no class-balanced sampling of training tiles")
    g.add_argument("--epochs", type=int)
    g.add_argument("--k-folds", type=int)
    g.add_argument("--batch-size", type=int)
    g.add_argument("--lr", type=float)
    g.add_argument("--early-stop", type=int, help="epochs without a better validation AP before training stops "
                   "(auto-tuned; with --max-minutes at least a quarter of the schedule, and never before 3/4 of it)")
    g.add_argument("--accum", type=int, default=1, help="gradient accumulation steps")
    g.add_argument("--clip", type=float, default=10.0, help="gradient norm clip")
    g.add_argument("--warmup-steps", type=int, default=50)
    g.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--ema", type=_at_least_zero(float, "a number of epochs >= 0 (0: no weight average)"),
                   default=None, metavar="EPOCHS",
                   help="validate, choose and export an exponential moving average of the weights that "
                        f"spans about EPOCHS epochs of steps (0: the raw weights; default {DEFAULT_EMA_EPOCHS:g} "
                        "for anchor_free, 0 for the others, where it has not been measured)")
    g.add_argument("--objectness-target", choices=OBJECTNESS_TARGETS, default=None,
                   help="anchor_free: what a positive cell's objectness learns, the IoU of the cell's box with "
                        "its signal's box: as predicted (raw, the default) or cut to the tile, as the Detector "
                        "reports it (in_tile; measured no better on VHF/UHF: docs/training.md, session 27)")
    g.add_argument("--overfit", type=int, default=0, metavar="N", help="debug: train and validate on N tiles")
    g.add_argument("--max-minutes", type=float, default=0.0, help="time budget: the schedule (epochs, learning-rate decay) is stretched to fill it, no k-fold "
                        "unless --k-folds is given; training stops sooner only when validation AP stops improving, "
                        "and not before 3/4 of the schedule")
    g.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    g.add_argument("--workers", type=int, default=0, help="data loader processes")
    g.add_argument("--threads", type=int, default=0,
                   help="CPU threads for PyTorch (default: PyTorch's; 1 is faster when other work shares the CPU)")
    g.add_argument("--resume", action="store_true", help="continue from last.pt where training stopped")
    g.add_argument("--init", metavar="CHECKPOINT",
                   help="start from the weights of an earlier run's checkpoint (its work/runs/final/best.pt; "
                        "same arch, backbone and labels) with a fresh schedule: more training, or "
                        "fine-tuning on new recordings; or from an exported anchor_free model: 'default' "
                        "(the embedded default model), an embedded model's name, a model.onnx or its folder "
                        "(BatchNorm recalibrated on the training tiles; the class head keeps the model's "
                        "weights for the labels it knows)")
    from .train import FREEZE
    g.add_argument("--freeze", choices=FREEZE, default="none",
                   help="layers that keep the weights the run starts from: backbone (anchor_free: its "
                        "convolutional stages; the feature pyramid and the heads train) for a fine-tune with "
                        "--init that should move less of what the starting model does; default none")
    g.add_argument("--init-other-resolution", action="store_true",
                   help="with --init from an exported model: accept one made at another FFT size, hop, window, "
                        "pooling or width; its weights are then a starting point at this run's resolution "
                        "(a finer time grid for narrow bursts, say). Normalisation and dB range must still match: "
                        "they give the pixels their meaning")
    g.add_argument("--score-threshold", type=float, default=None,
                   help="written into the card; default: for anchor_free the threshold that maximises "
                        "class-agnostic F1 on the validation tiles, else 0.5")
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    g.add_argument("--progress-jsonl", metavar="FILE",
                   help="also append machine-readable progress (stages, steps, per-epoch metrics) to FILE, "
                        "one JSON object per line (training/progress.py)")


def _params(a):
    from gnuradio.rfdetect.apps.cli import _params as params_from_args
    return params_from_args(a)


def cmd_prepare(a):
    from .prepare import PrepareOptions, prepare
    s = prepare(a.data, a.out, PrepareOptions(_params(a), a.tile_height, a.overlap, labels=a.labels),
                progress=not a.quiet, jobs=a.jobs)
    print(f"prepare: {s['tiles']} tiles ({s['tiles_with_boxes']} with boxes, {s['boxes']} boxes) from "
          f"{s['recordings']} recordings; labels {s['labels']}; {len(s['skipped'])} skipped -> {a.out}")
    return s


def _tune(a, ds, show=True):
    from .autotune import auto_tune, format_table
    # a time budget goes to the one model that is shipped: k-fold runs would each take it
    k_folds = a.k_folds if a.k_folds is not None or not a.max_minutes else 0
    r = auto_tune(ds["tiles_with_boxes"], a.arch, a.device,
                  {"epochs": a.epochs, "k_folds": k_folds, "batch_size": a.batch_size, "lr": a.lr,
                   "early_stop": a.early_stop})
    if show:
        print(format_table(r))
    return r


def cmd_autotune(a):
    from .prepare import load_dataset
    _tune(a, load_dataset(a.tiles))


def _config(a, tune):
    from .augment import parse_augment
    from .train import TrainConfig
    augment = a.augment if a.augment != "auto" else ("all" if a.arch == "anchor_free" else "none")
    return TrainConfig(augment=parse_augment(augment), balance=not a.no_balance, arch=a.arch, backbone=a.backbone, epochs=tune.epochs, k_folds=tune.k_folds,
                       batch_size=tune.batch_size, lr=tune.lr, early_stop=tune.early_stop,
                       warmup_steps=a.warmup_steps, accum=a.accum, clip=a.clip, amp=not a.no_amp, seed=a.seed,
                       overfit=a.overfit, max_minutes=a.max_minutes, device=a.device, workers=a.workers,
                       progress=not a.quiet, init=getattr(a, "init", None),
                       init_other_resolution=getattr(a, "init_other_resolution", False),
                       freeze=getattr(a, "freeze", "none"),
                       ema=a.ema if a.ema is not None else (DEFAULT_EMA_EPOCHS if a.arch == "anchor_free" else 0.0))


def _check_train_args(a):
    """Options that would do nothing, one error before any work: --init-other-resolution
    without --init; --objectness-target for an architecture without objectness; --freeze for
    an architecture without a backbone to freeze, or without --init (or --resume) to start from."""
    if getattr(a, "init_other_resolution", False) and not getattr(a, "init", None):
        raise ValueError("--init-other-resolution: give --init MODEL too (the exported model whose weights "
                         "start the run at this run's spectrogram settings)")
    if getattr(a, "freeze", "none") != "none":
        from .train import check_freeze
        check_freeze(a.freeze, a.arch, getattr(a, "init", None), getattr(a, "resume", False))
    if getattr(a, "objectness_target", None) and a.arch != "anchor_free":
        raise ValueError(f"--objectness-target is anchor_free's; --arch {a.arch} has no objectness")


def cmd_train(a):
    _check_train_args(a)
    if getattr(a, "threads", 0):
        import torch
        torch.set_num_threads(a.threads)
    from .archs import make_arch
    from .prepare import load_dataset
    from .train import distributed, train
    ds = load_dataset(a.tiles)
    rank, _ = distributed()
    tune = _tune(a, ds, show=rank == 0)
    arch = make_arch(a.arch, ds["labels"], a.backbone, ds["params"], ds["tile_height"])
    if getattr(a, "objectness_target", None):
        arch.objectness_target = a.objectness_target
        if rank == 0:
            print(f"train: objectness target {arch.objectness_target} (--objectness-target)")
    return train(arch, ds, _config(a, tune), a.out, resume=a.resume)


def _evaluate(ds, checkpoint, val_images, out_dir, device, score_threshold, progress, class_confidence=None,
              profile=None):
    from .evaluate import evaluate_recordings, evaluate_tiles, validation_recordings, write_report
    from .export import load_checkpoint
    from .train import resolve_device
    dev = resolve_device(device)
    arch, model = load_checkpoint(checkpoint, ds, dev, class_confidence, profile_classifier=profile)
    report = {"arch": arch.name, "backbone": arch.backbone, "labels": arch.labels,
              "score_threshold": score_threshold, "checkpoint": str(checkpoint)}
    if hasattr(arch, "class_confidence"):
        report["class_confidence"] = arch.class_confidence
    report["pixel"] = evaluate_tiles(arch, model, dev, ds, val_images, score_threshold, progress)
    recs = validation_recordings(ds, val_images)
    if recs:
        report["physical"] = evaluate_recordings(arch, model, dev, ds, recs, score_threshold, progress)
    else:
        report["physical_note"] = "no recording is wholly in the validation tiles"
    path = write_report(out_dir, report)
    p = report["pixel"]
    print(f"evaluate: pixel mAP {p['mAP']:.3f} AP50 {p['AP50']:.3f} macro-F1 {p['macro_f1']:.3f}"
          + (f"; {_physical_summary(report['physical'])}" if "physical" in report else "") + f" -> {path}")
    return report


def _physical_summary(r) -> str:
    ap = r["ap50"]
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    return (f"held-out recordings (seconds x Hz): AP50 class-agnostic {fmt(ap['class_agnostic_AP'])}, "
            f"mAP50 {fmt(ap['mAP'])}, recall {r['class_agnostic']['recall']:.3f}")


def cmd_evaluate_model(a):
    """A finished model (any format the Detector loads) on a folder of labelled recordings."""
    from gnuradio.rfdetect.inference.model_runtime import COMBINE, resolve_auto_for_recordings
    from .evaluate import evaluate_detector, load_for_scoring, write_report
    from .prepare import find_recordings
    recs = [str(r) for r in find_recordings(a.recordings)]
    # 'auto' may stand for a model and one beside it on a grid of its own: scored together
    specs, note = resolve_auto_for_recordings([a.model], recs)
    if note:
        print(note, file=sys.stderr)
    loaded, labels, score = load_for_scoring(specs, a.score_threshold, a.ap_floor, _params(a), a.tile_height,
                                             a.overlap, a.labels)
    (model, ds, _), branches = loaded[0], loaded[1:]
    r = evaluate_detector(model, labels, ds, recs, score, progress=not a.quiet, truth=a.truth,
                          branches=[(m, d) for m, d, _ in branches])
    name = COMBINE.join(specs)
    report = {"arch": name, "backbone": "-", "labels": labels, "score_threshold": score,
              "recordings": a.recordings, "physical": r,
              "pixel_note": "whole recordings only: see the physical section"}
    path = write_report(a.out, report)
    print(f"evaluate: {name} on {len(recs)} recordings: {_physical_summary(r)} -> {path}")
    return report


def cmd_evaluate(a):
    if a.model:
        if not a.recordings:
            raise ValueError("evaluate --model needs --recordings DIR")
        return cmd_evaluate_model(a)
    if not (a.tiles and a.checkpoint):
        raise ValueError("evaluate needs --tiles and --checkpoint, or --model and --recordings")
    from .prepare import load_dataset
    ds = load_dataset(a.tiles)
    images = ds["images"]
    if a.train_run:
        images = json.loads((Path(a.train_run) / "train.json").read_text())["val_tiles"]
    _evaluate(ds, a.checkpoint, images, a.out, a.device, 0.5 if a.score_threshold is None else a.score_threshold,
              not a.quiet, a.class_confidence)


def cmd_export(a):
    from .export import export_engine, export_onnx, export_torch, load_checkpoint
    from .prepare import load_dataset
    ds = load_dataset(a.tiles)
    if getattr(a, "profile_from", None):
        a.profile_value, profile_labels = _profile_from(a.profile_from, ds)
    arch, model = load_checkpoint(a.checkpoint, ds, "cpu", getattr(a, "class_confidence", None),
                                  getattr(a, "score_rule", None), getattr(a, "class_region", None),
                                  getattr(a, "box_vote", None), getattr(a, "refine_min_rows", None),
                                  getattr(a, "splatter_db", None), getattr(a, "refine_peak_db", None),
                                  getattr(a, "trace_lines", None), getattr(a, "profile_value", None))
    if getattr(a, "profile_from", None) and profile_labels != list(arch.labels):
        raise ValueError(f"--profile-from {a.profile_from}: its labels {profile_labels} are not the checkpoint's "
                         f"{list(arch.labels)}")
    metrics = {}
    if a.report and Path(a.report).is_file():
        r = json.loads(Path(a.report).read_text())
        metrics = {k: r[k] for k in ("pixel", "physical") if k in r}
    path = export_onnx(arch, model, ds, a.out, metrics, a.score_threshold, extra={"training": {"command": a.command}})
    if not getattr(a, "no_torch", False):
        export_torch(arch, model, ds, a.out)
    if not a.no_engine:
        export_engine(path, fp16=True)
    return path


def _card_path(given: Path) -> Path:
    """The card of a model given as its folder, its card or one of its model files."""
    from gnuradio.rfdetect.inference.model_runtime import card_for
    if given.is_dir():
        return given / "model.card.json"
    return given if given.name.endswith(".card.json") else card_for(given)


def _profile_from(path, ds: dict) -> tuple[dict, list]:
    """(the ``profile_classifier`` of a model's card, that card's labels), refused unless the
    card was made for the spectrogram of the tiles ``ds``."""
    from gnuradio.rfdetect.inference.model_runtime import ModelCard, ModelError
    card_path = _card_path(Path(path))
    try:
        card = ModelCard.load(card_path)
    except (OSError, ModelError) as e:
        raise ValueError(f"--profile-from {path}: {e}") from None
    if "profile_classifier" not in card.extra:
        raise ValueError(f"--profile-from {path}: card {card_path} has no profile_classifier")
    differ = card.spectrogram.differences(ds["params"])
    if differ:
        raise ValueError(f"--profile-from {path}: its card's spectrogram is not the tiles' ({'; '.join(differ)})")
    return card.extra["profile_classifier"], list(card.labels)


def _validation_settings(ds, checkpoint, val_images, device, class_confidence=None, profile=None) -> tuple:
    """The card's (score threshold, class_confidence), both from the validation tiles
    (never the held-out recordings). anchor_free only; others get (0.5, None).

    class_confidence: as given, or "auto": train.choose_class_confidence. Threshold: anchor_free's objectness is
    trained towards box IoU, so 0.5 would drop good detections; the threshold that
    maximises class-agnostic F1 is used instead."""
    from .export import load_checkpoint
    from .train import choose_class_confidence, resolve_device, validation_ap
    dev = resolve_device(device)
    auto = class_confidence == "auto"
    arch, model = load_checkpoint(checkpoint, ds, dev, None if auto else class_confidence, profile_classifier=profile)
    if arch.name != "anchor_free":
        return 0.5, None
    if auto:
        best, tried = choose_class_confidence(arch, model, dev, ds, val_images)
        print("run: class_confidence " + ", ".join(
            f"{c}: AP50 {r['class_agnostic_AP']:.3f} mAP50 {r['mAP'] or 0:.3f}" for c, r in tried.items())
            + f" (validation tiles) -> {best}")
        arch.class_confidence = best
        r = tried[best]
    else:
        r = validation_ap(arch, model, dev, ds, val_images)
    th = round(max(r["best_f1_threshold"], arch.eval_score), 3)
    print(f"run: score threshold {th} (best class-agnostic F1 {r['best_f1']:.3f} on the validation tiles)")
    return th, arch.class_confidence


def cmd_profile(a):
    """Fit the profile classifier on a prepared folder's training tiles and write it into a model's card."""
    from gnuradio.rfdetect.inference.model_runtime import ModelCard
    from .prepare import load_dataset
    from .profile import add_to_card, fit_on_tiles, training_tiles
    given = Path(a.model)
    card_path = _card_path(given)
    folder = card_path.parent
    if not card_path.is_file():
        raise ValueError(f"{given}: no model card ({card_path.name}; give the folder of a model `rfdetect-train run` "
                         f"or export wrote, or its model file)")
    card = ModelCard.load(card_path)
    if card.output_format != "anchor_free/1":
        raise ValueError(f"{card_path}: a profile classifier applies to anchor_free/1 models, not "
                         f"{card.output_format}")
    if a.remove:
        if "profile_classifier" not in card.extra:
            print(f"profile: {card_path} has none")
            return None
        add_to_card(card_path, None)
        print(f"profile: removed from {card_path} (its metrics and thresholds are still those it was exported with)")
        return None
    tiles = Path(a.tiles) if a.tiles else folder / "work" / "tiles"
    ds = load_dataset(tiles)
    if ds["params"] != card.spectrogram or ds["tile_height"] != card.input_shape[2]:
        differ = card.spectrogram.differences(ds["params"])
        if ds["tile_height"] != card.input_shape[2]:
            differ.append(f"tile_height: {card.input_shape[2]} != {ds['tile_height']}")
        raise ValueError(f"{tiles}: its tiles are not the model's (model != tiles: {'; '.join(differ)})")
    images, note = training_tiles(ds, tiles, folder)
    print(f"profile: {len(images)} tiles of {tiles} ({note})")
    value = fit_on_tiles(ds, images, list(card.labels), a.seed, not a.quiet)
    if not a.cap:
        value["cap_at_network"] = False
    add_to_card(card_path, value, a.command)
    print(f"profile: {value['fit']['boxes']} boxes, training accuracy {value['fit']['train_accuracy']:.3f} "
          f"-> {card_path} (its metrics and thresholds are still those it was exported with)")
    return value


def cmd_run(a):
    from .prepare import load_dataset
    from .progress import emit
    out = Path(a.out)
    work = out / "work"
    t0 = time.monotonic()
    a.tiles = str(work / "tiles")
    _check_train_args(a)
    if getattr(a, "init", None):
        from .train import require_init_file
        require_init_file(a.init)
    emit("stage", stage="prepare")
    if a.resume and (work / "tiles" / "dataset.json").is_file():
        print(f"run: reusing prepared tiles in {a.tiles}")
    else:
        cmd_prepare(argparse.Namespace(**{**vars(a), "out": a.tiles}))
    ds = load_dataset(a.tiles)
    emit("stage", stage="train", tiles=len(ds["images"]))
    summary = cmd_train(argparse.Namespace(**{**vars(a), "out": str(work / "runs")}))
    ck = Path(summary["final"]["checkpoint"])
    a.profile_value = None
    if a.profile and summary["arch"] == "anchor_free":
        from .profile import MIN_BOXES, fit_on_tiles
        emit("stage", stage="profile")
        a.profile_value = fit_on_tiles(ds, summary["train_tiles"], summary["labels"], a.seed, not a.quiet,
                                       min_boxes=MIN_BOXES)
    emit("stage", stage="evaluate")
    if a.score_threshold is None or a.class_confidence == "auto":
        th, a.class_confidence = _validation_settings(ds, ck, summary["val_tiles"], a.device, a.class_confidence,
                                                      a.profile_value)
        a.score_threshold = th if a.score_threshold is None else a.score_threshold
    report = _evaluate(ds, ck, summary["val_tiles"], work / "report", a.device, a.score_threshold, not a.quiet,
                       a.class_confidence, a.profile_value)
    emit("stage", stage="export")
    cmd_export(argparse.Namespace(**{**vars(a), "checkpoint": str(ck), "out": str(out),
                                     "report": str(work / "report" / "report.json")}))
    emit("stage", stage="done", model=str(out / "model.onnx"))
    print(f"run: done in {(time.monotonic() - t0) / 60:.1f} min -> {out / 'model.onnx'} "
          f"(try: rfdetect detect REC --model {out / 'model.onnx'})")
    return report


def _class_confidence(v: str):
    return v if v == "auto" else float(v)


def _class_confidence_arg(p, default_help, auto=False):
    p.add_argument("--class-confidence", type=_class_confidence if auto else float, default=None, metavar="P",
                   help="anchor_free's label rule: a detection whose best class probability is >= P is named, "
                        "else it is 'signal'; " + default_help)


def build_parser():
    from gnuradio.rfdetect.inference.postprocess import SCORE_RULES
    from .prepare import TRUTH_RULES
    ap = argparse.ArgumentParser(prog="rfdetect-train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="SigMF recordings -> tile PNGs + bbox JSON + COCO")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--quiet", action="store_true")
    _spectrogram_args(p)
    _jobs_arg(p)
    _labels_arg(p)
    p.set_defaults(func=cmd_prepare)
    p = sub.add_parser("autotune", help="print the training settings for a prepared folder")
    p.add_argument("--tiles", required=True)
    _train_args(p)
    p.set_defaults(func=cmd_autotune)
    p = sub.add_parser("train", help="train (k-fold when the table says so) -> RUN_DIR/final/best.pt")
    p.add_argument("--tiles", required=True)
    p.add_argument("--out", required=True)
    _train_args(p)
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("evaluate", help="AP50 (class-agnostic and per class), P/R/F1, recall by SNR, "
                                         "confusion -> report; a checkpoint on prepared tiles, or "
                                         "--model on --recordings")
    p.add_argument("--tiles", help="prepared tiles (with --checkpoint)")
    p.add_argument("--checkpoint")
    p.add_argument("--model", help="a model the Detector loads (file, folder, default, narrowband, energy, or auto: "
                                   "the embedded model `rfdetect detect` runs on these recordings): scored on "
                                   "--recordings through the Detector's tile path, in seconds x Hz")
    p.add_argument("--recordings", help="folder of labelled SigMF recordings (with --model)")
    p.add_argument("--ap-floor", type=float, default=0.05,
                   help="with --model: detections down to this score feed AP (the threshold applies to P/R/F1)")
    p.add_argument("--truth", choices=TRUTH_RULES, default="resolvable",
                   help="with --model: score against the annotations with boxes smaller than the spectrogram "
                        "shows (2 rows, 2 columns) widened to that size, as training learns them (default), "
                        "or against the annotations exactly")
    _spectrogram_args(p)  # with --model energy (a card says them for trained models)
    _labels_arg(p, "with --model: score against the truth boxes of these labels only (a model trained with "
                   "--labels; default: every truth box counts for the class-agnostic numbers)")
    p.add_argument("--train-run", help="a train output folder: evaluate on its validation tiles")
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="cpu")
    p.add_argument("--score-threshold", type=float, default=None,
                   help="for precision/recall/F1: default the card's (--model), 0.5 (--checkpoint)")
    _class_confidence_arg(p, "with --checkpoint; default 0.5 (a --model's card says its own)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_evaluate)
    p = sub.add_parser("export", help="checkpoint -> model.onnx + card (+ model.pt, + TensorRT engine)")
    p.add_argument("--tiles", required=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--report", help="report.json whose metrics go into the card")
    p.add_argument("--score-threshold", type=float, default=0.5)
    _class_confidence_arg(p, "default 0.5")
    p.add_argument("--score-rule", choices=list(SCORE_RULES), default=None,
                   help="anchor_free's detection score: objectness_x_probability (default: a named "
                        "detection's objectness times its class probability) or objectness (alone, so "
                        "naming a signal never lowers its rank; the card's threshold and metrics stay those "
                        "of --score-threshold and --report); docs/model_card.md")
    p.add_argument("--class-region", type=float, default=None, metavar="R",
                   help="anchor_free: name a detection from the class probabilities of the central R of its "
                        "box (0: of the one cell that gave the box; default 0.5); docs/model_card.md")
    p.add_argument("--box-vote", type=float, default=None, metavar="IOU",
                   help="anchor_free: each box NMS keeps becomes the objectness-weighted mean of the "
                        "candidate boxes overlapping it at IOU or more (0: off, the default, as in every "
                        "embedded model); docs/model_card.md, docs/training.md session 27")
    p.add_argument("--refine-min-rows", type=int, default=None, metavar="ROWS",
                   help="anchor_free: refine the time edges of boxes at least ROWS rows tall from the "
                        "energy (default 2, also for checkpoints from before session 28, which had 8; the card's "
                        "threshold and metrics stay those of --score-threshold and --report); docs/model_card.md, "
                        "docs/training.md session 28")
    p.add_argument("--splatter-db", type=float, default=None, metavar="DB",
                   help="anchor_free: drop a box at most 3 rows tall at the row where an emission DB dB "
                        "stronger in its band starts or ends: its switching splatter (0: off; default 20, "
                        "also for checkpoints from before session 34, which had none); docs/model_card.md")
    p.add_argument("--refine-peak-db", type=float, default=None, metavar="DB",
                   help="anchor_free: a box whose signal fills too little of it for its mean profile (a "
                        "strong chirp's diagonal line) snaps to its pixels DB dB above the floor, where its "
                        "peak is twice that (0: off; default 15, also for checkpoints from before session 37, "
                        "which had none); docs/model_card.md")
    p.add_argument("--trace-lines", action=argparse.BooleanOptionalAction, default=None,
                   help="anchor_free: a box over part of a sloped bright line (a chirp boxed over a stretch "
                        "of its sweep) grows to the whole line, at --refine-peak-db's level (default on, also "
                        "for checkpoints from before session 38, which had it off); docs/model_card.md")
    p.add_argument("--profile-from", metavar="MODEL",
                   help="anchor_free: put the profile classifier of this model's card (its folder, card or model "
                        "file) into the exported card, as `rfdetect-train run` fitted it; docs/model_card.md")
    p.add_argument("--no-engine", action="store_true")
    p.add_argument("--no-torch", action="store_true", help="skip model.pt (the PyTorch backend's format)")
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("profile", help="fit a profile classifier and write it into an anchor_free model's card")
    p.add_argument("--model", required=True, help="the model's folder (or its model.onnx)")
    p.add_argument("--tiles", help="a prepared folder with the model's spectrogram and tile height (default: "
                                   "MODEL/work/tiles, the tiles `rfdetect-train run` trained on)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cap", action=argparse.BooleanOptionalAction, default=True,
                   help="name no box more surely than the network's best class (the default: a box the network "
                        "could not name stays `signal`); --no-cap lets the profile name it (the embedded models)")
    p.add_argument("--remove", action="store_true", help="take the profile classifier out of the card instead")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_profile)
    p = sub.add_parser("run", help="prepare -> auto-tune -> train -> profile -> evaluate -> export")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--profile", action=argparse.BooleanOptionalAction, default=True,
                   help="anchor_free: after training, fit the profile classifier on the training tiles, so "
                        "that boxes are named from their time-averaged spectrum too (default on, where every "
                        "label with boxes has enough of them: training/profile.py MIN_BOXES; docs/model_card.md, "
                        "docs/training.md session 39)")
    p.add_argument("--no-engine", action="store_true")
    p.add_argument("--no-torch", action="store_true", help="skip model.pt")
    _class_confidence_arg(p, "default 0.5; 'auto': the one of 0.2/0.3/0.4/0.5 with the best validation AP50 "
                             "(mean of class-agnostic and mAP; more names, and on held-out recordings sometimes "
                             "a lower class-agnostic AP: docs/training.md)", auto=True)
    _spectrogram_args(p)
    _jobs_arg(p)
    _labels_arg(p)
    _train_args(p)
    p.set_defaults(func=cmd_run)
    return ap


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    a = build_parser().parse_args(argv)
    a.command = "rfdetect-train " + shlex.join(argv)
    if getattr(a, "progress_jsonl", None):
        from .progress import set_progress_log
        set_progress_log(a.progress_jsonl)
    try:
        a.func(a)
    except KeyboardInterrupt:
        print("rfdetect-train: interrupted", file=sys.stderr)
        return 130
    except (ValueError, RuntimeError, OSError) as e:
        print(f"rfdetect-train: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
