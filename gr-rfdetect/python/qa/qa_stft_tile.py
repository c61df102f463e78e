#!/usr/bin/env python3
"""Python QA of the bound C++ STFT Tile, run by ctest against this build's modules
(build/test_modules): ``rfdetect.stft_tile`` gives the C++ block, its rows are the bits
of this build's pybind11 kernel, its tags are moved and bad parameters are named."""
import os

import numpy as np
import pmt
from gnuradio import blocks, gr, gr_unittest

from gnuradio import rfdetect
from gnuradio.rfdetect.dsp import compiled_rows
from gnuradio.rfdetect.dsp.spectrogram import SpectrogramParams, spectrogram

SMALL = SpectrogramParams(fft_size=1024, hop=512, width=512)


class qa_stft_tile(gr_unittest.TestCase):
    def test_the_package_is_this_builds(self):
        want = os.environ.get("RFDETECT_EXPECT_PACKAGE")
        if want:
            self.assertEqual(os.path.dirname(rfdetect.__file__), want)
            self.assertEqual(os.path.dirname(compiled_rows.load().__file__), os.path.join(want, "dsp"))

    def test_rows_and_tags(self):
        rng = np.random.default_rng(4)
        n = 200 * SMALL.hop + 77
        x = ((rng.standard_normal(n) + 1j * rng.standard_normal(n)) * 0.1).astype(np.complex64)
        x[n // 3:n // 2] += np.exp(2j * np.pi * 0.2 * np.arange(n // 2 - n // 3)).astype(np.complex64)
        t = gr.tag_t()
        t.offset, t.key, t.value = 5000, pmt.intern("rx_freq"), pmt.from_double(1e9)
        tb = gr.top_block()
        src = blocks.vector_source_c(x.tolist(), False, 1, [t])
        stft = rfdetect.stft_tile(fft_size=SMALL.fft_size, hop=SMALL.hop, width=SMALL.width, samp_rate=2e6,
                                  device="cpu")
        self.assertIn("rfdetect_python", type(stft).__module__)
        snk = blocks.vector_sink_f(SMALL.width)
        tb.connect(src, stft, snk)
        tb.run()
        rows = np.array(snk.data(), np.float32).reshape(-1, SMALL.width)
        ref = spectrogram(x, SMALL)
        self.assertEqual(rows.shape, (n // SMALL.hop, SMALL.width))
        self.assertTrue(np.array_equal(rows, ref))
        tags = {pmt.symbol_to_string(t.key): t for t in snk.tags()}
        self.assertEqual(tags["rx_freq"].offset, 5000 // SMALL.hop)
        d = pmt.to_python(tags["rfdetect_stft"].value)
        self.assertEqual(tags["rfdetect_stft"].offset, 0)
        self.assertEqual(d.pop("samp_rate"), 2e6)
        self.assertEqual(SpectrogramParams.from_dict(d), SMALL)

    def test_bad_parameters_are_named(self):
        with self.assertRaisesRegex(ValueError, "fft_size=1000"):
            rfdetect.stft_tile(fft_size=1000, hop=500)
        native = rfdetect.blocks.stft_tile.native_block()
        with self.assertRaisesRegex(ValueError, "fft_size=1000 must be a power of two"):
            native(1000, 500)


if __name__ == "__main__":
    gr_unittest.run(qa_stft_tile)
