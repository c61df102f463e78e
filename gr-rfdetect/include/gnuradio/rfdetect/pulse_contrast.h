/* The pulse detector's contrast map: each pixel of a plain-dB spectrogram tile over its
 * local background, and each pixel's power over its column's noise floor.
 *
 * The reference, and the documentation of each step, is the NumPy code of
 * python/rfdetect/inference/pulse_detector.py (PulseDetector._contrast_numpy); this kernel
 * computes the same values in a few passes over a tile held in cache (equal to float32
 * rounding: tests/test_pulse_detector.py). Needs nothing but the C++ standard library:
 * the pybind11 module gnuradio.rfdetect.inference._pulse_contrast runs it.
 */
#ifndef INCLUDED_RFDETECT_PULSE_CONTRAST_H
#define INCLUDED_RFDETECT_PULSE_CONTRAST_H

#include <vector>

#include <gnuradio/rfdetect/kernel_api.h>

namespace gr {
namespace rfdetect {

/*! tile_db: rows x cols plain-dB pixels (finite; the power over each column's floor, which is
 *  never under -300 dB, is summed in float32, so no pixel may stand 380 dB over the tile's
 *  quietest, or over -300 dB). floor_rows: the row blocks whose
 *  column medians are the floors. context_rows: the background window's height. gaps:
 *  the background windows' distances from the pixel, in rows (the better ratio of them).
 *  Writes power (each pixel's linear power over its column's floor) and contrast (its
 *  2 x 3 mean over its background), rows x cols each. Throws std::invalid_argument
 *  naming a bad size. */
RFDETECT_KERNEL_API void pulse_contrast(const float* tile_db,
                                        long rows,
                                        long cols,
                                        long floor_rows,
                                        long context_rows,
                                        const std::vector<long>& gaps,
                                        float* power,
                                        float* contrast);

} // namespace rfdetect
} // namespace gr

#endif
