"""rfdetect_training: labelled SigMF recordings -> detectors the Detector block loads.

Stages (each a subcommand of ``rfdetect-train``): prepare, autotune, train, evaluate,
export; ``run`` does them all. Needs PyTorch and torchvision, not GNU Radio: it
uses gr-rfdetect's plain-Python parts (the one spectrogram function, the tile
assembler, the post-processing) so training tiles equal the Detector's tiles.
"""
__version__ = "0.1.0"
