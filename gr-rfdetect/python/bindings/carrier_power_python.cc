/* gnuradio.rfdetect.inference._carrier_power: the carrier detector's power maps
 * (lib/carrier_power.cc) for Python, without GNU Radio. `pip install .` builds it (setup.py)
 * and so does CMake; python/rfdetect/inference/carrier_detector.py uses it where it loads.
 * The kernel works on raw pointers, so the tile's shape and dtype are checked first
 * (float32_tile.h); it runs
 * without the GIL, beside the Detector's other branches.
 */
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <gnuradio/rfdetect/carrier_power.h>

#include "float32_tile.h"

#include <utility>

namespace py = pybind11;

PYBIND11_MODULE(_carrier_power, m)
{
    m.doc() = "gr-rfdetect's carrier power kernel (C++), without GNU Radio";

    m.def(
        "power",
        [](const py::array& tile, long smooth_rows) {
            long rows, cols;
            const float* in = float32_tile(tile, rows, cols);
            py::array_t<float> power({ rows, cols }), smooth({ rows, cols });
            float* p = power.mutable_data();
            float* s = smooth.mutable_data();
            {
                py::gil_scoped_release release;
                gr::rfdetect::carrier_power(in, rows, cols, smooth_rows, p, s);
            }
            return std::make_pair(power, smooth);
        },
        py::arg("tile"),
        py::arg("smooth_rows"),
        "(power, smooth) of a plain-dB tile: CarrierDetector._power_numpy's values to float32 rounding "
        "(tile: rows x columns, finite float32 under 300 dB)");
}
