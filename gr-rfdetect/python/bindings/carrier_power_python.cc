/* gnuradio.rfdetect.inference._carrier_power: the carrier detector's power maps and candidate
 * regions (lib/carrier_power.cc) for Python, without GNU Radio. `pip install .` builds it (setup.py)
 * and so does CMake; python/rfdetect/inference/carrier_detector.py uses it where it loads.
 * The kernel works on raw pointers, so the tile's shape and dtype are checked first
 * (float32_tile.h); it runs
 * without the GIL, beside the Detector's other branches.
 */
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <gnuradio/rfdetect/carrier_power.h>

#include "float32_tile.h"

#include <cstdint>
#include <utility>
#include <vector>

namespace py = pybind11;

PYBIND11_MODULE(_carrier_power, m)
{
    m.doc() = "gr-rfdetect's carrier kernel (C++): power maps and candidate regions, without GNU Radio";

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

    m.def(
        "regions",
        [](const py::array& smooth, float level, long edge, long min_rows) {
            long rows, cols;
            const float* in = float32_tile(smooth, rows, cols);
            py::array_t<int32_t> labels({ rows, cols });
            int32_t* out = labels.mutable_data();
            std::vector<gr::rfdetect::carrier_region> found;
            {
                py::gil_scoped_release release;
                found = gr::rfdetect::carrier_regions(in, rows, cols, level, edge, min_rows, out);
            }
            py::list regions;
            for (const auto& g : found)
                regions.append(py::make_tuple(g.label, g.y0, g.y1, g.x0, g.x1));
            return std::make_pair(labels, regions);
        },
        py::arg("smooth"),
        py::arg("level"),
        py::arg("edge"),
        py::arg("min_rows"),
        "(labels, [(label, y0, y1, x0, x1)]): CarrierDetector._regions_numpy's labels of the pixels of smooth "
        "over level (edge columns at each side left out, closed by 3 x 3, 8-connected) and the regions at "
        "least min_rows rows tall, in label order (smooth: rows x columns float32)");
}
