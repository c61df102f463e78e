/* The STFT Tile: complex64 samples in, one row of normalised spectrogram values per
 * `hop` samples out, on the row kernel of stft_rows.h. */
#ifndef INCLUDED_RFDETECT_STFT_TILE_H
#define INCLUDED_RFDETECT_STFT_TILE_H

#include <gnuradio/rfdetect/api.h>
#include <gnuradio/sync_decimator.h>
#include <string>
#include <vector>

namespace gr {
namespace rfdetect {

/*!
 * \brief Spectrogram rows: one row of `width` float32 per `hop` complex samples.
 * \ingroup rfdetect
 *
 * \details
 * Row r is the windowed FFT of samples [r*hop - (fft_size-hop), r*hop + hop) (the
 * stream is preceded by fft_size-hop zeros: GNU Radio's history), |X|^2 / sum(w^2)
 * pooled over fft_size/width bins (mean or max), in dB, and with normalisation "floor"
 * mapped from [db_low, db_high] dB above the row's noise floor to [0, 1]. The math is
 * python/rfdetect/dsp/spectrogram.py's; the rows are the same bits as the pybind11
 * kernel's that training and `rfdetect detect` use when given the same window taps.
 *
 * Tags out: `rfdetect_stft` on row 0 (a dict of the spectrogram parameters, plus
 * samp_rate when it is > 0); rx_time, rx_freq, rx_rate and rfdetect_length moved to the
 * row holding their sample, rx_time corrected to that row's first new sample (row*hop)
 * with the rate of the last rx_rate tag, else samp_rate.
 *
 * Bad parameters throw std::invalid_argument naming each problem (ValueError in Python).
 */
class RFDETECT_API stft_tile : virtual public gr::sync_decimator
{
public:
    typedef std::shared_ptr<stft_tile> sptr;

    /*!
     * \param fft_size FFT length, a power of two >= 16
     * \param hop samples between rows, 1..fft_size (the decimation)
     * \param window hann, hamming, blackman, blackmanharris or boxcar
     * \param width output values per row; divides fft_size, a multiple of 32
     * \param pooling "mean" or "max" of the pooled bins' power
     * \param normalisation "floor" (dB above the row's noise floor in [0, 1]),
     *        "running_floor" (the same above a floor tracked over the stream, so that a
     *        signal over most of the band is not taken for the floor) or "none"
     * \param db_low dB mapped to 0
     * \param db_high dB mapped to 1
     * \param samp_rate corrects rx_time until an rx_rate tag comes; 0: unknown, >= 0
     * \param threads CPU threads for the rows, 0..64 (0: up to 2); the helpers run
     *        from start() to stop()
     * \param window_taps fft_size taps to use instead of stft_window(window) (Python
     *        passes SciPy's, so that rows equal training's to the bit); empty: computed
     * \param bin_scale 1/sum(taps^2) as the caller computed it; 0: computed here
     */
    static sptr make(int fft_size = 4096,
                     int hop = 2048,
                     const std::string& window = "hann",
                     int width = 1024,
                     const std::string& pooling = "mean",
                     const std::string& normalisation = "running_floor",
                     float db_low = -10.0f,
                     float db_high = 50.0f,
                     double samp_rate = 0.0,
                     int threads = 0,
                     const std::vector<float>& window_taps = std::vector<float>(),
                     float bin_scale = 0.0f);

    virtual int fft_size() const = 0;
    virtual int hop() const = 0;
    virtual int width() const = 0;
    /*! threads the rows run on */
    virtual int threads() const = 0;
    /*! the rate rx_time is corrected with now (samp_rate, or the last rx_rate tag) */
    virtual double samp_rate() const = 0;
};

} // namespace rfdetect
} // namespace gr

#endif /* INCLUDED_RFDETECT_STFT_TILE_H */
