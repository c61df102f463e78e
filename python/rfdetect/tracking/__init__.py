"""After detection: ``nms_merge`` removes duplicates across models and overlapping tiles
and joins pieces of one signal cut by a tile edge; ``track_assigner`` gives each signal an
ID that lasts while it does. Plain classes; the blocks wrap them."""
