/* gnuradio.rfdetect.dsp._stft_rows: the row kernel (lib/stft_rows.cc) for Python,
 * without GNU Radio. `pip install .` builds it (setup.py: training boxes have no GNU
 * Radio) and so does CMake; python/rfdetect/dsp/compiled_rows.py loads it. The kernel
 * works on raw pointers, so every shape and dtype it relies on is checked here; the
 * rows run without the GIL, so Python threads each holding a state run in parallel.
 */
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <gnuradio/rfdetect/stft_rows.h>

#include <atomic>
#include <complex>
#include <memory>
#include <stdexcept>
#include <string>

namespace py = pybind11;
using gr::rfdetect::stft_rows;

namespace {

struct row_counter {
    std::atomic<long> next{ 0 };
};

void check(const stft_rows& s, const py::array& x, long n_rows, long hop, const py::array& out)
{
    if (!py::isinstance<py::array_t<std::complex<float>>>(x) ||
        !(x.flags() & py::array::c_style))
        throw std::invalid_argument("samples must be a contiguous complex64 array");
    if (!py::isinstance<py::array_t<float>>(out) || !(out.flags() & py::array::c_style) ||
        out.ndim() != 2 || out.shape(1) != s.width() || out.shape(0) < n_rows ||
        !out.writeable())
        throw std::invalid_argument("out must be a writable contiguous float32 array of at least " +
                                    std::to_string(n_rows) + " rows of " +
                                    std::to_string(s.width()));
    if (n_rows < 0 || hop < 1)
        throw std::invalid_argument("n_rows >= 0 and hop >= 1");
    long need; // n_rows*hop + the history, checked for overflow (a huge hop)
    const bool overflow = __builtin_mul_overflow(n_rows, hop, &need) ||
                          __builtin_add_overflow(
                              need, s.fft_size() > hop ? s.fft_size() - hop : 0, &need);
    if (x.ndim() != 1 || overflow || x.shape(0) < need)
        throw std::invalid_argument(
            "need " + (overflow ? std::string("more") : std::to_string(need)) +
            " samples for " + std::to_string(n_rows) + " rows of hop " + std::to_string(hop));
}

float* floors_of(const py::object& floors, long n_rows)
{
    if (floors.is_none())
        return nullptr;
    auto a = py::reinterpret_borrow<py::array>(floors);
    if (!py::isinstance<py::array_t<float>>(a) || !(a.flags() & py::array::c_style) ||
        a.ndim() != 2 || a.shape(1) != 2 || a.shape(0) < n_rows || !a.writeable())
        throw std::invalid_argument("floors must be a writable contiguous float32 array of at least " +
                                    std::to_string(n_rows) + " rows of 2");
    return static_cast<float*>(a.mutable_data());
}

} // namespace

PYBIND11_MODULE(_stft_rows, m)
{
    m.doc() = "gr-rfdetect's spectrogram row kernel (C++, FFTW3f), without GNU Radio";

    // module_local: pip's copy and CMake's copy of this module may both be loaded in one
    // process (tests compare them) without their types clashing
    py::class_<row_counter>(m, "RowCounter", py::module_local())
        .def(py::init<>())
        .def_property_readonly("value", [](const row_counter& c) { return c.next.load(); });

    py::class_<stft_rows>(m, "StftRows", py::module_local())
        .def(py::init([](int fft_size,
                         int width,
                         bool pooling_max,
                         bool floor_norm,
                         float db_low,
                         float db_high,
                         float bin_scale,
                         py::array_t<float, py::array::c_style | py::array::forcecast> window) {
                 if (window.ndim() != 1 || window.shape(0) != fft_size)
                     throw std::invalid_argument("the window must have fft_size=" +
                                                 std::to_string(fft_size) + " taps");
                 return std::make_unique<stft_rows>(fft_size,
                                                    width,
                                                    pooling_max,
                                                    floor_norm,
                                                    db_low,
                                                    db_high,
                                                    bin_scale,
                                                    window.data());
             }),
             py::arg("fft_size"),
             py::arg("width"),
             py::arg("pooling_max"),
             py::arg("floor_norm"),
             py::arg("db_low"),
             py::arg("db_high"),
             py::arg("bin_scale"),
             py::arg("shifted_window"))
        .def_property_readonly("fft_size", &stft_rows::fft_size)
        .def_property_readonly("width", &stft_rows::width)
        .def(
            "rows",
            [](stft_rows& s, py::array x, long n_rows, long hop, py::array out, py::object floors) {
                check(s, x, n_rows, hop, out);
                float* fp = floors_of(floors, n_rows);
                auto xp = static_cast<const std::complex<float>*>(x.data());
                auto op = static_cast<float*>(out.mutable_data());
                py::gil_scoped_release nogil;
                s.rows(xp, n_rows, hop, op, fp);
                return n_rows;
            },
            py::arg("x"),
            py::arg("n_rows"),
            py::arg("hop"),
            py::arg("out"),
            py::arg("floors") = py::none(),
            "out[:n_rows] = the rows of x (n_rows*hop + fft_size-hop samples)")
        .def(
            "rows_shared",
            [](stft_rows& s,
               py::array x,
               long n_rows,
               long hop,
               py::array out,
               row_counter& counter,
               long chunk,
               py::object floors) {
                check(s, x, n_rows, hop, out);
                float* fp = floors_of(floors, n_rows);
                auto xp = static_cast<const std::complex<float>*>(x.data());
                auto op = static_cast<float*>(out.mutable_data());
                py::gil_scoped_release nogil;
                return s.rows_shared(xp, n_rows, hop, op, counter.next, chunk, fp);
            },
            py::arg("x"),
            py::arg("n_rows"),
            py::arg("hop"),
            py::arg("out"),
            py::arg("counter"),
            py::arg("chunk"),
            py::arg("floors") = py::none(),
            "rows of one batch shared by the threads calling this with one RowCounter; "
            "returns the rows this call made");

    py::class_<gr::rfdetect::running_floor>(m, "RunningFloor", py::module_local())
        .def(py::init<int, float, float>(), py::arg("width"), py::arg("db_low"), py::arg("db_high"))
        .def(
            "normalise",
            [](gr::rfdetect::running_floor& s, py::array rows, py::array floors) {
                if (!py::isinstance<py::array_t<float>>(rows) || !(rows.flags() & py::array::c_style) ||
                    rows.ndim() != 2 || rows.shape(1) != s.width() || !rows.writeable())
                    throw std::invalid_argument("rows must be a writable contiguous float32 array of rows of " +
                                                std::to_string(s.width()));
                const long n = (long)rows.shape(0);
                const float* fp = floors_of(floors, n);
                if (!fp)
                    throw std::invalid_argument("floors are needed");
                auto rp = static_cast<float*>(rows.mutable_data());
                py::gil_scoped_release nogil;
                s.normalise(rp, fp, n);
            },
            py::arg("rows"),
            py::arg("floors"),
            "plain-dB rows -> running_floor rows, in place, in stream order");

    m.def("window",
          &gr::rfdetect::stft_window,
          py::arg("name"),
          py::arg("n"),
          "the C++ block's own window taps (when no taps are passed to it)");
}
