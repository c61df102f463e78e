"""The spectrogram, the one function every row comes from (``spectrogram``): the STFT Tile
block, ``rfdetect detect`` and training data preparation all call it. ``compiled_rows``
loads the native row kernel, ``spectrogram_gpu`` runs the same math on a GPU."""
