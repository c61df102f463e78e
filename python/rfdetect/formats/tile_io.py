"""Spectrogram tiles as 16-bit grayscale PNG files.

Training data preparation writes them, and the Detector writes the tiles it sees when
asked (``rfdetect detect --save-tiles``), with the same function, so the two can be
compared file for file. 16 bits keep a normalised pixel within 1/131070 of its float
value (8 bits would move it by up to 0.12 dB), and any image viewer opens them.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

PNG_SCALE = 65535.0


def quantize(tile: np.ndarray) -> np.ndarray:
    return np.round(np.clip(np.asarray(tile, dtype=np.float32), 0.0, 1.0) * PNG_SCALE).astype(np.uint16)


def write_tile_png(path, tile: np.ndarray) -> None:
    """Atomic: a reader never sees half a PNG."""
    from PIL import Image
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        Image.fromarray(quantize(tile)).save(tmp, format="PNG")
        os.replace(tmp, path)
    except BaseException:  # a full disk: no half-written file left behind
        tmp.unlink(missing_ok=True)
        raise


def read_tile_png(path) -> np.ndarray:
    """-> float32 tile in [0, 1]."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as im:
            mode = im.mode
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"{path}: not a readable PNG tile ({e})") from None
    if arr.ndim != 2:
        raise ValueError(f"{path}: a tile must be a single-channel image, got shape {arr.shape}")
    scale = 255.0 if mode in ("L", "P") else PNG_SCALE  # 8-bit tiles from other tools also load
    return arr.astype(np.float32) / np.float32(scale)


def check_tile_png(path, shape=None) -> None:
    """Raise ValueError naming ``path`` when it is not a whole, single-channel PNG tile
    (of ``shape`` (rows, columns) when given). Checks the file's structure and checksums
    without decoding the pixels, so a data set can be checked before training starts."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as im:
            size, bands = im.size, len(im.getbands())
            im.verify()
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(f"{path}: not a readable PNG tile ({e})") from None
    if bands != 1:
        raise ValueError(f"{path}: a tile must be a single-channel image, it has {bands} channels")
    if shape is not None and (size[1], size[0]) != tuple(shape):
        raise ValueError(f"{path}: tile is {(size[1], size[0])}, the data set says {tuple(shape)}")
