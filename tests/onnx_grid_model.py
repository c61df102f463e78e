"""A tiny static-shape ONNX detector built with onnx.helper (no training needed):
mean power per 16x16 cell, the top-K cells become boxes. It exercises the real ONNX
Runtime path and the boxes/scores/labels contract; trained models follow the same
contract (docs/model_card.md)."""
import numpy as np
import onnx
from onnx import TensorProto, helper

from gnuradio.rfdetect.inference.model_runtime import ModelCard, card_for


def make_grid_model(path, params, tile_height, cell=16, k=8, label="burst", name="grid16", width=None,
                    batch=1):
    """``width`` narrower than the spectrogram: the model sees frequency chunks;
    ``batch="n"``: a dynamic first dimension (several chunks per call)."""
    width = width or params.width
    gh, gw = tile_height // cell, width // cell
    c = lambda n, v, t=TensorProto.INT64: helper.make_tensor(n, t, [len(v)] if isinstance(v, list) else [], v if isinstance(v, list) else [v])  # noqa: E731
    nodes = [
        helper.make_node("AveragePool", ["tile"], ["pooled"], kernel_shape=[cell, cell], strides=[cell, cell]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("TopK", ["flat", "k"], ["vals", "idx"], axis=1),
        helper.make_node("Sub", ["vals", "offset"], ["centred"]),
        helper.make_node("Mul", ["centred", "gain"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["scores"]),
        helper.make_node("Div", ["idx", "gw"], ["row"]),
        helper.make_node("Mod", ["idx", "gw"], ["col"]),
        helper.make_node("Cast", ["row"], ["rowf"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["col"], ["colf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["colf", "cellf"], ["x0"]),
        helper.make_node("Mul", ["rowf", "cellf"], ["y0"]),
        helper.make_node("Add", ["x0", "cellf"], ["x1"]),
        helper.make_node("Add", ["y0", "cellf"], ["y1"]),
        helper.make_node("Unsqueeze", ["x0", "ax2"], ["x0u"]),
        helper.make_node("Unsqueeze", ["y0", "ax2"], ["y0u"]),
        helper.make_node("Unsqueeze", ["x1", "ax2"], ["x1u"]),
        helper.make_node("Unsqueeze", ["y1", "ax2"], ["y1u"]),
        helper.make_node("Concat", ["x0u", "y0u", "x1u", "y1u"], ["boxes"], axis=2),
        helper.make_node("Mul", ["idx", "zero"], ["labels"]),
    ]
    inits = [c("k", [k]), c("gw", gw), c("zero", 0), c("ax2", [2]),
             c("offset", 0.3, TensorProto.FLOAT), c("gain", 20.0, TensorProto.FLOAT),
             c("cellf", float(cell), TensorProto.FLOAT)]
    graph = helper.make_graph(
        nodes, name, [helper.make_tensor_value_info("tile", TensorProto.FLOAT, [batch, 1, tile_height, width])],
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [batch, k, 4]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch, k]),
         helper.make_tensor_value_info("labels", TensorProto.INT64, [batch, k])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    card = ModelCard(name=name, labels=[label], input_shape=[1, 1, tile_height, width],
                     spectrogram=params, score_threshold=0.5)
    card.save(card_for(path))
    return path
