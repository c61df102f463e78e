#include <pybind11/complex.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <gnuradio/rfdetect/stft_tile.h>

namespace py = pybind11;

static const char* STFT_TILE_DOC =
    "STFT Tile (C++): complex64 in, one row of `width` float32 per `hop` samples out.\n"
    "Use gnuradio.rfdetect.stft_tile(...) (it picks this block on the CPU and passes\n"
    "SciPy's window taps, so rows are the training rows to the bit). Bad parameters\n"
    "raise ValueError naming each problem.";

void bind_stft_tile(py::module& m)
{
    using stft_tile = ::gr::rfdetect::stft_tile;

    py::class_<stft_tile,
               gr::sync_decimator,
               gr::sync_block,
               gr::block,
               gr::basic_block,
               std::shared_ptr<stft_tile>>(m, 
                                           "stft_tile",
                                           py::dynamic_attr(), // .params, .engine: set by the factory
                                           STFT_TILE_DOC)
        .def(py::init(&stft_tile::make),
             py::arg("fft_size") = 4096,
             py::arg("hop") = 2048,
             py::arg("window") = "hann",
             py::arg("width") = 1024,
             py::arg("pooling") = "mean",
             py::arg("normalisation") = "floor",
             py::arg("db_low") = -10.0f,
             py::arg("db_high") = 50.0f,
             py::arg("samp_rate") = 0.0,
             py::arg("threads") = 0,
             py::arg("window_taps") = std::vector<float>(),
             py::arg("bin_scale") = 0.0f)
        .def("fft_size", &stft_tile::fft_size)
        .def("hop", &stft_tile::hop)
        .def("width", &stft_tile::width)
        .def("threads", &stft_tile::threads)
        .def("samp_rate", &stft_tile::samp_rate);
}
