"""``--init default`` / ``--init MODEL.onnx``: an exported ``anchor_free`` model's weights put
back into the training network, so that a shipped model (the embedded default first of all)
can be fine-tuned on a user's recordings.

An export folds each BatchNorm into the convolution before it (y = W'x + b'). Put back as
they are (W = W', the BatchNorm an identity plus b') the network computes exactly what the
ONNX file computes in eval mode, but in training mode BatchNorm divides by the statistics of
each batch and the network would compute something else from the first step. So the
BatchNorm layers are calibrated: the mean m and standard deviation v of each channel of W'x
over the run's first training tiles become the running statistics, the scale v and the shift
b' + m. Eval mode is still exact (v (z - m) / v + b' + m = z + b'), and a training batch
whose statistics are near m and v is normalised back to nearly the same values.

The class head keeps the model's weights for each of the run's labels the model knows (by
name, in the run's order); a label the model does not know starts fresh, and the features,
objectness and boxes carry over whatever the labels (a line says which labels were kept).
The spectrogram settings must be the model's.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gnuradio.rfdetect.inference.model_card import ModelCard, card_for
from gnuradio.rfdetect.inference.model_runtime import DEFAULT_MODEL, EMBEDDED_DIR, embedded_models, \
    model_card_file, network_dir

# training tiles whose activations calibrate the BatchNorm statistics
CALIBRATION_TILES = 8


def export_path(spec) -> Path | None:
    """The ONNX file ``--init`` names, when it names an export rather than a checkpoint:
    ``default``, another embedded model's name, a .onnx file, or a folder holding
    model.onnx (for a model that runs another's network, such as ``wideband-short``, that
    model's file: the same weights); else None."""
    spec = str(spec)
    if spec == "default":
        return DEFAULT_MODEL
    if spec in embedded_models() and not Path(spec).exists():
        return network_dir(EMBEDDED_DIR / spec) / "model.onnx"
    p = Path(spec)
    if p.suffix == ".onnx":
        return p
    if p.is_dir() and (network_dir(p) / "model.onnx").is_file():
        return network_dir(p) / "model.onnx"
    return None


# spectrogram settings that set where a pixel is, not what it means: with other_resolution a
# model made at other values of these still starts a run (the network is fully convolutional)
RESOLUTION_FIELDS = ("fft_size", "hop", "window", "pooling", "width")


def export_card(spec) -> Path | None:
    """The card that goes with :func:`export_path` of ``spec``: the one beside the file, or
    for a model that runs another's network (``wideband-short``) its own."""
    path = export_path(spec)
    return None if path is None else model_card_file(str(spec), path)


def init_from_export(path, arch, model: torch.nn.Module, tiles, other_resolution: bool = False,
                     card_file=None) -> str:
    """Load the exported ``anchor_free`` model at ``path`` into ``model`` (built by ``arch``),
    calibrating BatchNorm on ``tiles`` (2-D float arrays); -> a line saying what was kept.
    ``card_file``: the model's card (default: the one beside ``path``; :func:`export_card`).
    ValueError names what does not fit: another architecture or output format, other
    spectrogram settings (``other_resolution``: other RESOLUTION_FIELDS are accepted, and
    the line names them; another normalisation or dB range never is), a network of another
    shape, no calibration tiles."""
    import onnx
    from onnx import numpy_helper

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--init {path}: no such model file")
    card = ModelCard.load(card_file or card_for(path))
    if arch.name != "anchor_free" or card.output_format != arch.output_format:
        raise ValueError(f"--init {path}: an exported model can start only an anchor_free run from an "
                         f"anchor_free export (this run: {arch.name}; the model: {card.output_format})")
    differ = card.spectrogram.differing_fields(arch.params)
    accepted = [k for k in differ if k in RESOLUTION_FIELDS] if other_resolution else []
    refused = [k for k in differ if k not in accepted]
    if refused:
        hint = ("" if other_resolution or any(k not in RESOLUTION_FIELDS for k in refused) else
                ", or pass --init-other-resolution to start from its weights at these settings")
        raise ValueError(f"--init {path}: the model was trained on other spectrogram settings than these tiles "
                         f"({'; '.join(card.spectrogram.differences(arch.params, refused))}): prepare the "
                         f"recordings with the model's settings" + hint)
    tiles = [np.asarray(t, np.float32) for t in tiles][:CALIBRATION_TILES]
    if not tiles:
        raise ValueError(f"--init {path}: no training tile to calibrate BatchNorm on")
    graph = onnx.load(str(path)).graph
    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            values.update({node.output[0]: numpy_helper.to_array(a.t) for a in node.attribute if a.name == "value"})
    onnx_convs = [n for n in graph.node if n.op_type == "Conv"]
    convs = _convs_in_call_order(model, tiles[0].shape)
    # the class head's output channel of each of this run's labels in the model, where it has one
    model_row = {label: i for i, label in enumerate(card.labels)}
    rows = [model_row.get(label) for label in arch.labels]
    if len(onnx_convs) != len(convs):
        raise ValueError(f"--init {path}: {len(onnx_convs)} convolutions in the model, {len(convs)} in this "
                         f"run's network: another network")
    batchnorm = _batchnorm_after(model)
    folded = []
    with torch.no_grad():
        for node, (name, conv) in zip(onnx_convs, convs):
            w = values[node.input[1]]
            b = values[node.input[2]] if len(node.input) > 2 else np.zeros(w.shape[0], np.float32)
            if name == "cls":
                _class_head_rows(conv, w, b, rows)
                continue
            if tuple(w.shape) != tuple(conv.weight.shape):
                raise ValueError(f"--init {path}: convolution {name} is {tuple(w.shape)} in the model, "
                                 f"{tuple(conv.weight.shape)} here: another network")
            conv.weight.copy_(torch.from_numpy(np.array(w)))
            bn = batchnorm.get(name)
            if bn is None:
                conv.bias.copy_(torch.from_numpy(np.array(b)))
                continue
            # the identity BatchNorm first: the layers after it see what the export computes
            bn.weight.fill_(1.0)
            bn.bias.copy_(torch.from_numpy(np.array(b)))
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - bn.eps)
            folded.append((conv, bn))
    _calibrate(model, folded, tiles)
    known = [label for label, r in zip(arch.labels, rows) if r is not None]
    new_labels = [label for label, r in zip(arch.labels, rows) if r is None]
    if not new_labels:
        kept = "every weight" + ("" if list(card.labels) == list(arch.labels) else
                                 f" (the class head for this run's labels {known} of the model's {len(card.labels)})")
    else:
        kept = (f"every weight but the class head's rows for {new_labels}, which the model does not know and "
                f"start fresh" + (f" (kept: {known})" if known else ""))
    at = (f"; made at another resolution ({'; '.join(card.spectrogram.differences(arch.params, accepted))})"
          if accepted else "")
    return (f"train: starting from {path} ({card.name}): {kept}{at}; BatchNorm statistics from "
            f"{len(tiles)} training tiles")


def _class_head_rows(conv, w, b, rows) -> None:
    """The run's class head from the model's: output channel k takes the model's channel
    rows[k], or keeps its fresh initialisation where rows[k] is None."""
    if w.shape[1:] != tuple(conv.weight.shape[1:]):
        raise ValueError(f"--init: the class head takes {w.shape[1]} features in the model, "
                         f"{conv.weight.shape[1]} here: another network")
    for k, r in enumerate(rows):
        if r is not None:
            conv.weight[k].copy_(torch.from_numpy(np.array(w[r])))
            conv.bias[k] = float(b[r])


def _convs_in_call_order(model, tile_shape) -> list:
    """[(name, Conv2d)] in the order a forward pass calls them: the order of the export's
    Conv nodes."""
    names = {id(m): n for n, m in model.named_modules()}
    order = []
    hooks = [m.register_forward_hook(lambda m, _i, _o: order.append((names[id(m)], m)))
             for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    was = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 1, *tile_shape, device=next(model.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    return order


def _batchnorm_after(model) -> dict:
    """{conv name: the BatchNorm2d right after it in the same Sequential}."""
    found = {}
    for name, seq in model.named_modules():
        if isinstance(seq, torch.nn.Sequential):
            kids = list(seq.named_children())
            for (a_name, a), (_, b) in zip(kids, kids[1:]):
                if isinstance(a, torch.nn.Conv2d) and isinstance(b, torch.nn.BatchNorm2d):
                    found[f"{name}.{a_name}" if name else a_name] = b
    return found


def _calibrate(model, folded, tiles) -> None:
    """Per channel mean and standard deviation of each folded convolution's output over
    ``tiles`` (the network as exported, layer by layer), then BatchNorm set to reproduce
    the export with them (module docstring)."""
    sums = {id(conv): [0.0, 0.0, 0] for conv, _ in folded}

    def record(conv, _inp, out):
        z = out.detach().double()
        s = sums[id(conv)]
        s[0] = s[0] + z.sum(dim=(0, 2, 3))
        s[1] = s[1] + (z * z).sum(dim=(0, 2, 3))
        s[2] += z.shape[0] * z.shape[2] * z.shape[3]

    hooks = [conv.register_forward_hook(record) for conv, _ in folded]
    device = next(model.parameters()).device
    was = model.training
    try:
        model.eval()
        with torch.no_grad():
            for t in tiles:
                model(torch.from_numpy(t)[None, None].to(device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    with torch.no_grad():
        for conv, bn in folded:
            total, squares, n = sums[id(conv)]
            mean = total / n
            var = (squares / n - mean * mean).clamp(min=0.0)
            # exact in eval mode whatever var is: scale / sqrt(running_var + eps) == 1
            bn.running_var.copy_((var - bn.eps).clamp(min=0.0).float())
            bn.running_mean.copy_(mean.float())
            bn.weight.copy_(torch.sqrt(bn.running_var + bn.eps))
            bn.bias.add_(mean.float())
