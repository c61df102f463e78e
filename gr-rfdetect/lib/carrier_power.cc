/* The carrier detector's power maps (carrier_power.h). Each step does the arithmetic of the
 * NumPy and SciPy calls of CarrierDetector._power_numpy, so that the two agree to the ulp by
 * which NumPy's float32 power and the C library's powf can differ:
 * - the floors are np.median's values (radix_median.h);
 * - the running means are SciPy 1.10's uniform_filter1d: a sum in double of the window's
 *   values, then each step adds the entering value less the leaving one (their difference
 *   taken in double) and writes sum / size as float32 (_running_mean_down does the same
 *   down the columns).
 * Built without -ffp-contract=fast: a fused multiply-add would round differently.
 */
#include <gnuradio/rfdetect/carrier_power.h>

#include "radix_median.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

namespace gr {
namespace rfdetect {

namespace {

// one thread's buffers, a few rows' worth, kept between tiles (a Detector branch's thread
// calls this for every tile)
struct carrier_buffers {
    std::vector<uint32_t> keys, scratch;
    std::vector<double> running, line;
};

} // namespace

void carrier_power(const float* tile_db, long rows, long cols, long smooth_rows, float* power, float* smooth)
{
    if (rows < 1 || cols < 1)
        throw std::invalid_argument("carrier_power: the tile must have rows and columns, not " +
                                    std::to_string(rows) + " x " + std::to_string(cols));
    if (smooth_rows < 1)
        throw std::invalid_argument("carrier_power: smooth_rows must be >= 1, not " + std::to_string(smooth_rows));
    const long n = rows, w = cols;
    thread_local carrier_buffers buf;

    // 1. linear power over each row's floor (its median / ln 2, never under 1e-30)
    const float ln2 = static_cast<float>(std::log(2.0));
    buf.keys.resize(w);
    for (long r = 0; r < n; r++) {
        float* p = power + r * w;
        const float* db = tile_db + r * w;
        for (long c = 0; c < w; c++) {
            p[c] = std::pow(10.0f, db[c] / 10.0f); // >= 0, never NaN: keys sort as values
            buf.keys[c] = detail::key_of(p[c]);
        }
        const float floor = std::max(detail::median_of(buf.keys.data(), w, buf.scratch) / ln2, 1e-30f);
        for (long c = 0; c < w; c++)
            p[c] /= floor;
    }

    // 2. the running mean of smooth_rows rows down each column (the window's first row
    // smooth_rows / 2 rows up; the first and last rows repeated past the tile), into smooth
    const long before = smooth_rows / 2;
    const double size = static_cast<double>(smooth_rows);
    auto row_at = [&](long i) { return power + std::clamp(i - before, 0L, n - 1) * w; };
    buf.running.assign(w, 0.0);
    for (long i = 0; i < smooth_rows; i++) {
        const float* p = row_at(i);
        for (long c = 0; c < w; c++)
            buf.running[c] += p[c];
    }
    for (long c = 0; c < w; c++)
        smooth[c] = static_cast<float>(buf.running[c] / size);
    for (long r = 1; r < n; r++) {
        const float *in = row_at(r + smooth_rows - 1), *out = row_at(r - 1);
        float* d = smooth + r * w;
        for (long c = 0; c < w; c++) {
            buf.running[c] += static_cast<double>(in[c]) - static_cast<double>(out[c]);
            d[c] = static_cast<float>(buf.running[c] / size);
        }
    }

    // 3. the 3-column mean across each row (the edge columns repeated), in place: each row is
    // copied out first
    buf.line.resize(w + 2);
    for (long r = 0; r < n; r++) {
        float* s = smooth + r * w;
        const float* d = s;
        buf.line[0] = d[0];
        for (long c = 0; c < w; c++)
            buf.line[c + 1] = d[c];
        buf.line[w + 1] = d[w - 1];
        double sum = buf.line[0] + buf.line[1] + buf.line[2];
        s[0] = static_cast<float>(sum / 3.0);
        for (long c = 1; c < w; c++) {
            sum += buf.line[c + 2] - buf.line[c - 1];
            s[c] = static_cast<float>(sum / 3.0);
        }
    }
}

} // namespace rfdetect
} // namespace gr
