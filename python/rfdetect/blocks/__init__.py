"""The GNU Radio blocks, thin shells over the plain classes of the other subpackages, in
the order data flows through them:

    sigmf_source  ->  stft_tile  ->  detector  ->  nms_merge  ->  track_assigner
        ->  zmq_pub_sink / sigmf_annotation_sink / jsonl_sink

``iq_detector`` is stft_tile -> detector -> nms_merge in one hierarchical block, a branch per
model card's spectrogram, with ``auto`` (the model made for the capture) by default.

``messages`` converts the tile messages between them, ``message_block`` is the shell of
the message-in blocks, ``stream_end`` makes sure the final tile message is handled
before a file run ends. Importing this subpackage needs GNU Radio."""
