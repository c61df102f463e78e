/* gnuradio.rfdetect.inference._pulse_contrast: the pulse detector's contrast map
 * (lib/pulse_contrast.cc) for Python, without GNU Radio. `pip install .` builds it
 * (setup.py) and so does CMake; python/rfdetect/inference/pulse_detector.py uses it where
 * it loads. The kernel works on raw pointers, so the tile's shape and dtype are checked
 * first (float32_tile.h); it runs without the GIL, beside the Detector's other branches.
 */
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <gnuradio/rfdetect/pulse_contrast.h>

#include "float32_tile.h"

#include <utility>
#include <vector>

namespace py = pybind11;

PYBIND11_MODULE(_pulse_contrast, m)
{
    m.doc() = "gr-rfdetect's pulse contrast kernel (C++), without GNU Radio";

    m.def(
        "contrast",
        [](const py::array& tile, long floor_rows, long context_rows, std::vector<long> gaps) {
            long rows, cols;
            const float* in = float32_tile(tile, rows, cols);
            py::array_t<float> contrast({ rows, cols }), power({ rows, cols });
            float* p = power.mutable_data();
            float* c = contrast.mutable_data();
            {
                py::gil_scoped_release release;
                gr::rfdetect::pulse_contrast(in, rows, cols, floor_rows, context_rows, gaps, p, c);
            }
            return std::make_pair(contrast, power);
        },
        py::arg("tile"),
        py::arg("floor_rows"),
        py::arg("context_rows"),
        py::arg("gaps"),
        "(contrast, power) of a plain-dB tile: PulseDetector._contrast_numpy's values to "
        "float32 rounding (tile: rows x columns, finite float32)");
}
