"""From tiles to boxes: model cards (``model_card``), the backends that run a network
(ONNX Runtime, PyTorch, TensorRT), the shared decoding and NMS (``postprocess``), the
model-free energy detector, hardware profiles, and ``tile_detector`` -- the plain class
behind the Detector block that gathers rows into tiles, runs the models with deadlines
and turns pixel boxes into records in seconds and Hz."""
