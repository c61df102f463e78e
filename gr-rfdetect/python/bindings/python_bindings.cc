/* The gnuradio.rfdetect.rfdetect_python module: the C++ blocks, bound in gr_modtool's
 * file layout (one bind_<block>() per block in <block>_python.cc). Written by hand: the
 * docstring headers that gr_modtool's bindtool generates are left out (no doxygen step in
 * this build); the block's documentation is the class docstring below and the GRC YAML.
 */
#include <pybind11/pybind11.h>

namespace py = pybind11;

void bind_stft_tile(py::module& m);

PYBIND11_MODULE(rfdetect_python, m)
{
    // the base classes (gr.sync_decimator, ...) come from GNU Radio's own bindings
    py::module::import("gnuradio.gr");
    bind_stft_tile(m);
}
