/* The spectrogram row kernel: window -> FFT (FFTW) -> power -> pooling -> log10 ->
 * noise-floor normalisation, one pass per frame.
 *
 * Needs no GNU Radio (only FFTW3f and the C++ standard library): the STFT Tile block
 * (stft_tile.h), the pybind11 module gnuradio.rfdetect.dsp._stft_rows that training and
 * the offline `rfdetect detect` path use, and the C++ QA all run this one class, so the
 * rows are the same bits everywhere. The row definition is written down in
 * python/rfdetect/dsp/spectrogram.py (rows_from_spectrum is the reference after the FFT).
 */
#ifndef INCLUDED_RFDETECT_STFT_ROWS_H
#define INCLUDED_RFDETECT_STFT_ROWS_H

#include <atomic>
#include <complex>
#include <string>
#include <vector>

#include <gnuradio/rfdetect/kernel_api.h>

namespace gr {
namespace rfdetect {

constexpr int STFT_FLOOR_GROUPS = 32;

/*! One thread's kernel state: an FFTW plan and its frame buffers. Creating and
 * destroying states is thread-safe (FFTW's planner runs under one lock); one state
 * serves one thread at a time; any number of states run at once. */
class RFDETECT_KERNEL_API stft_rows
{
public:
    /*! \param shifted_window fft_size taps: the window times (-1)^n (the FFT shift)
     *  \param bin_scale 1 / sum(window^2)
     *  Throws std::invalid_argument naming a bad size, std::runtime_error when FFTW
     *  cannot plan or memory runs out. */
    stft_rows(int fft_size,
              int width,
              bool pooling_max,
              bool floor_norm,
              float db_low,
              float db_high,
              float bin_scale,
              const float* shifted_window);
    ~stft_rows();
    stft_rows(const stft_rows&) = delete;
    stft_rows& operator=(const stft_rows&) = delete;

    /*! x: complex64 samples; row r uses x[r*hop, r*hop + fft_size); out: n_rows*width
     * floats; floors (without floor normalisation, when not null): per row the noise
     * floor and the quietest column group in dB (2*n_rows floats), for running_floor */
    void rows(const std::complex<float>* x,
              long n_rows,
              long hop,
              float* out,
              float* floors = nullptr);

    /*! Rows [0, n_rows) shared by every thread calling this with the same counter
     * (zero at the start): each takes the next `chunk` rows when it comes free, so a
     * thread the OS preempts holds up no other. Returns the rows this call made. */
    long rows_shared(const std::complex<float>* x,
                     long n_rows,
                     long hop,
                     float* out,
                     std::atomic<long>& next,
                     long chunk,
                     float* floors = nullptr);

    int fft_size() const { return d_fft_size; }
    int width() const { return d_width; }

private:
    void release();
    int d_fft_size, d_width, d_pool;
    bool d_pooling_max, d_floor_norm;
    float d_db_low, d_db_high, d_bin_scale;
    float* d_window;
    void* d_frame; // fftwf_complex*
    void* d_spec;
    float* d_power;
    void* d_plan; // fftwf_plan
};

/* The "running_floor" normalisation (python/rfdetect/dsp/spectrogram.py says why):
 * rows this many back, the low quantile (percent) of their floor-over-quietest-group
 * spread, and the band (dB) over it whose median is the receiver's spread */
constexpr int STFT_RUNNING_FLOOR_ROWS = 256;
constexpr int STFT_RUNNING_FLOOR_QUANTILE = 10;
constexpr float STFT_RUNNING_FLOOR_BAND_DB = 1.0f;
constexpr float STFT_RUNNING_FLOOR_SILENT_DB = -290.0f; // silent rows are not tracked

/*! One stream's running_floor state: normalise() turns plain-dB rows (the kernel
 * without floor normalisation) into normalised rows in place, given the kernel's
 * floors for them, in stream order. */
class RFDETECT_KERNEL_API running_floor
{
public:
    running_floor(int width, float db_low, float db_high);
    void normalise(float* rows, const float* floors, long n_rows);
    int width() const { return d_width; }

private:
    int d_width;
    float d_db_low, d_db_high;
    std::vector<float> d_spread; // the last STFT_RUNNING_FLOOR_ROWS spreads, a ring
    long d_seen = 0;             // rows seen
    std::vector<float> d_sorted; // the same values, in order
};

/*! Window taps as scipy.signal.get_window(name, n, fftbins=True) gives them (periodic),
 * computed in double and rounded to float. The Python side passes its own taps to the
 * block (so rows are bit-identical to training's); this is for C++ users. Throws
 * std::invalid_argument for an unknown name. */
RFDETECT_KERNEL_API std::vector<float> stft_window(const std::string& name, int n);

/*! "" when the parameters work together, else every problem, named as the Python
 * SpectrogramParams names them (fft_size=1000 must be a power of two >= 16; ...). */
RFDETECT_KERNEL_API std::string stft_param_problems(int fft_size,
                                                    int hop,
                                                    const std::string& window,
                                                    int width,
                                                    const std::string& pooling,
                                                    const std::string& normalisation,
                                                    float db_low,
                                                    float db_high);

} // namespace rfdetect
} // namespace gr

#endif /* INCLUDED_RFDETECT_STFT_ROWS_H */
