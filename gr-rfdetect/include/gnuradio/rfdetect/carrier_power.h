/* The carrier detector's power maps: each pixel of a plain-dB spectrogram tile over its
 * row's noise floor, and that power smoothed over rows and columns.
 *
 * The reference, and the documentation of each step, is the NumPy and SciPy code of
 * python/rfdetect/inference/carrier_detector.py (CarrierDetector._power_numpy); this kernel
 * computes the same float32 values to rounding (tests/test_carrier_detector.py: NumPy's
 * float32 power rounds some pixels an ulp from the C library's powf), in a few passes over
 * each row. Needs nothing but the C++ standard library: the pybind11 module
 * gnuradio.rfdetect.inference._carrier_power runs it.
 */
#ifndef INCLUDED_RFDETECT_CARRIER_POWER_H
#define INCLUDED_RFDETECT_CARRIER_POWER_H

#include <gnuradio/rfdetect/kernel_api.h>

namespace gr {
namespace rfdetect {

/*! tile_db: rows x cols plain-dB pixels (finite, under 300 dB). smooth_rows: the height of
 *  the running mean down the columns. Writes power (each pixel's linear power over its row's
 *  floor, the row's median / ln 2) and smooth (power's smooth_rows-row running mean, then its
 *  3-column mean; both with the edge pixel repeated past each end), rows x cols each. Throws
 *  std::invalid_argument naming a bad size. */
RFDETECT_KERNEL_API void carrier_power(
    const float* tile_db, long rows, long cols, long smooth_rows, float* power, float* smooth);

} // namespace rfdetect
} // namespace gr

#endif
