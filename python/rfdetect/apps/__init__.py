"""Programs on top of the library: the ``rfdetect`` command (``cli``), the file-mode
detection flowgraph it runs (``detect_flowgraph``), plots, the synthetic corpus generator
(``synth``) and ``rfdetect-demo``."""
