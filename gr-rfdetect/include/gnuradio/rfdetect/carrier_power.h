/* The carrier detector's kernels: its power maps (each pixel of a plain-dB spectrogram tile
 * over its row's noise floor, and that power smoothed over rows and columns) and its candidate
 * regions in them (labelled, with their boxes).
 *
 * The reference, and the documentation of each step, is the NumPy and SciPy code of
 * python/rfdetect/inference/carrier_detector.py (CarrierDetector._power_numpy and
 * _regions_numpy); the power maps are the same float32 values to rounding
 * (tests/test_carrier_detector.py: NumPy's float32 power and this kernel's each round some
 * pixels an ulp apart), the regions the same labels. Needs nothing but the C++ standard
 * library: the pybind11 module gnuradio.rfdetect.inference._carrier_power runs it.
 */
#ifndef INCLUDED_RFDETECT_CARRIER_POWER_H
#define INCLUDED_RFDETECT_CARRIER_POWER_H

#include <gnuradio/rfdetect/kernel_api.h>

#include <cstdint>
#include <vector>

namespace gr {
namespace rfdetect {

/*! tile_db: rows x cols plain-dB pixels (finite, under 300 dB). smooth_rows: the height of
 *  the running mean down the columns. Writes power (each pixel's linear power over its row's
 *  floor, the row's median / ln 2) and smooth (power's smooth_rows-row running mean, then its
 *  3-column mean; both with the edge pixel repeated past each end), rows x cols each. Throws
 *  std::invalid_argument naming a bad size. */
RFDETECT_KERNEL_API void carrier_power(
    const float* tile_db, long rows, long cols, long smooth_rows, float* power, float* smooth);

/*! A region of carrier_regions: its label, rows [y0, y1) and columns [x0, x1). */
struct carrier_region {
    int32_t label;
    long y0, y1, x0, x1;
};

/*! The carrier detector's candidate regions in smooth (rows x cols, carrier_power's): the
 *  pixels over level, outside the edge columns at each side, closed by 3 x 3 (dilated, then
 *  eroded with nothing outside the map, so that edge pixels are cleared) and labelled
 *  8-connected, numbered 1, 2, ... by each region's first pixel in row order (as
 *  scipy.ndimage.label numbers them). Writes the labels (0: no region) into labels (rows x
 *  cols) and returns the regions at least min_rows rows tall, in label order. Throws
 *  std::invalid_argument naming a bad size. */
RFDETECT_KERNEL_API std::vector<carrier_region> carrier_regions(
    const float* smooth, long rows, long cols, float level, long edge, long min_rows, int32_t* labels);

} // namespace rfdetect
} // namespace gr

#endif
