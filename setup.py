"""Builds the compiled spectrogram kernel (lib/stft_rows.c) next to the package; the
rest of the packaging is in pyproject.toml.

The kernel is a plain C shared library loaded with ctypes (no Python API). If it
cannot be built (no C compiler, no FFTW headers) the install goes on without it and
the spectrogram runs on NumPy at about half the speed, saying so once in the log.
"""
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

KERNEL = Extension("gnuradio.rfdetect.dsp._stft_rows", sources=["lib/stft_rows.c"], libraries=["fftw3f", "m"],
                   extra_compile_args=["-O3", "-std=gnu11"])


class optional_build_ext(build_ext):
    def run(self):
        try:
            super().run()
        except Exception as e:  # noqa: BLE001 - any compiler failure: install without the kernel
            self._skipped(e)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as e:  # noqa: BLE001
            self._skipped(e)

    def get_export_symbols(self, ext):
        return []  # not a Python module: no PyInit_ symbol to export

    @staticmethod
    def _skipped(e):
        print(f"WARNING: gr-rfdetect's compiled spectrogram kernel was not built ({e}); "
              "install gcc and libfftw3-dev for it. Rows will use NumPy.", file=sys.stderr)


setup(ext_modules=[KERNEL], cmdclass={"build_ext": optional_build_ext})
