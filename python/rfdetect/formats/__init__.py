"""Record formats and files, with no GNU Radio and no model: SigMF recordings in and out
(``sigmf_io``), the detection record and its JSON schema (``records``), the outputs that
last -- JSONL, SigMF annotation journal, ZeroMQ publisher -- (``record_outputs``), and the
16-bit PNG tiles of training (``tile_io``). Every other subpackage may import these."""
