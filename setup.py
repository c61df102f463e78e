"""Builds the compiled kernels, pybind11 modules next to the package: the spectrogram rows,
``gnuradio.rfdetect.dsp._stft_rows`` (gr-rfdetect/lib/stft_rows.cc and its binding
gr-rfdetect/python/bindings/stft_rows_python.cc), and the pulse detector's contrast map,
``gnuradio.rfdetect.inference._pulse_contrast`` (lib/pulse_contrast.cc), and the carrier
detector's power maps, ``gnuradio.rfdetect.inference._carrier_power`` (lib/carrier_power.cc); the rest of the
packaging is in pyproject.toml.

This is the front door for training boxes: it needs a C++ compiler, FFTW's headers and
pybind11 (pyproject.toml's build requirements; Debian: g++ libfftw3-dev pybind11-dev),
not GNU Radio. The GNU Radio block (the C++ STFT Tile) is built by CMake
(CMakeLists.txt). If a kernel cannot be built the install goes on without it and its work
runs on NumPy (the spectrogram at about half the speed), saying so once in the log.
"""
import os
import shutil
import sys

from setuptools import Extension, setup
try:
    from setuptools.command.build import build
except ImportError:  # setuptools < 62.4
    from distutils.command.build import build
from setuptools.command.build_ext import build_ext

try:
    import pybind11
    PYBIND11_INCLUDE = [pybind11.get_include()]
except ImportError:  # --no-build-isolation without the pybind11 Python package: Debian's pybind11-dev
    PYBIND11_INCLUDE = ["/usr/include"]

# -ffp-contract=fast: the same contraction rule as CMake's build of the same files (and the
# C kernel's gnu11 default before it), so every build makes the same row bits
CXXFLAGS = ["-O3", "-std=c++17", "-ffp-contract=fast", "-fvisibility=hidden"]

KERNEL = Extension("gnuradio.rfdetect.dsp._stft_rows",
                   sources=["gr-rfdetect/lib/stft_rows.cc", "gr-rfdetect/python/bindings/stft_rows_python.cc"],
                   include_dirs=["gr-rfdetect/include", *PYBIND11_INCLUDE], libraries=["fftw3f", "m", "dl"],
                   language="c++", extra_compile_args=CXXFLAGS)
# headers the model-free kernels share: a change to one rebuilds both modules
SHARED_HEADERS = ["gr-rfdetect/include/gnuradio/rfdetect/kernel_api.h", "gr-rfdetect/lib/radix_median.h",
                  "gr-rfdetect/lib/pow10.h", "gr-rfdetect/python/bindings/float32_tile.h"]
# the pulse detector's contrast map: -ffp-contract=off, for NumPy's reference rounds each
# operation on its own (gr-rfdetect/lib/pulse_contrast.cc)
PULSE_KERNEL = Extension("gnuradio.rfdetect.inference._pulse_contrast",
                         sources=["gr-rfdetect/lib/pulse_contrast.cc",
                                  "gr-rfdetect/python/bindings/pulse_contrast_python.cc"],
                         depends=["gr-rfdetect/include/gnuradio/rfdetect/pulse_contrast.h", *SHARED_HEADERS],
                         include_dirs=["gr-rfdetect/include", *PYBIND11_INCLUDE], language="c++",
                         extra_compile_args=["-O3", "-std=c++17", "-ffp-contract=off", "-fvisibility=hidden"])
# the carrier detector's power maps, its NumPy and SciPy reference's to float32 rounding
# (-ffp-contract=off likewise; gr-rfdetect/lib/carrier_power.cc)
CARRIER_KERNEL = Extension("gnuradio.rfdetect.inference._carrier_power",
                           sources=["gr-rfdetect/lib/carrier_power.cc",
                                    "gr-rfdetect/python/bindings/carrier_power_python.cc"],
                           depends=["gr-rfdetect/include/gnuradio/rfdetect/carrier_power.h", *SHARED_HEADERS],
                           include_dirs=["gr-rfdetect/include", *PYBIND11_INCLUDE], language="c++",
                           extra_compile_args=["-O3", "-std=c++17", "-ffp-contract=off", "-fvisibility=hidden"])


class clean_build(build):
    """Starts from an empty build/lib.*: setuptools copies all of it into the wheel, so
    modules of an earlier layout left there by a previous `pip install .` (the flat
    package, the ctypes kernel) were installed again beside the current ones."""

    def run(self):
        if os.path.isdir(self.build_lib):
            shutil.rmtree(self.build_lib)
        super().run()


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
            self._skipped(e, ext.name)

    @staticmethod
    def _skipped(e, name="the compiled kernels"):
        print(f"WARNING: gr-rfdetect's {name} was not built ({e}); install g++, libfftw3-dev and "
              "pybind11 for it. NumPy will do its work.", file=sys.stderr)


setup(ext_modules=[KERNEL, PULSE_KERNEL, CARRIER_KERNEL], cmdclass={"build": clean_build, "build_ext": optional_build_ext})
