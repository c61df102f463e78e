/* The pulse detector's contrast map (pulse_contrast.h). Each step follows the NumPy and
 * SciPy calls of PulseDetector._contrast_numpy so that the two agree to float32 rounding:
 * - the floors are the same medians;
 * - the small means are float32 sums: SciPy's running sums in double round differently, by
 *   an ulp, and lose a small value beside values 1e16 times larger to cancellation (which
 *   only a column floor of zeros makes);
 * - the background windows come from a cumulative sum in double as np.cumsum makes it (a
 *   float32 one would lose the noise under a strong signal).
 * Built without -ffp-contract=fast: a fused multiply-add would round differently from
 * NumPy's separate operations.
 */
#include <gnuradio/rfdetect/pulse_contrast.h>

#include "pow10.h"
#include "radix_median.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

namespace gr {
namespace rfdetect {

namespace {

using detail::key_of;
using detail::median_of;

// scipy.ndimage.uniform_filter1d(x, 3, axis=1, mode="nearest") of a row-major n x w
// array (w >= 1): each value, its left and right neighbours (the edge value past either
// end) summed in that order, / 3. SciPy keeps a running sum in double instead; the two
// differ by float32 rounding, and this form vectorises.
void mean_of_3_across(const float* in, long n, long w, float* out)
{
    for (long r = 0; r < n; r++) {
        const float* x = in + r * w;
        float* o = out + r * w;
        if (w == 1) {
            o[0] = (x[0] + x[0] + x[0]) / 3.0f;
            continue;
        }
        o[0] = (x[0] + x[0] + x[1]) / 3.0f;
        for (long c = 1; c < w - 1; c++)
            o[c] = (x[c - 1] + x[c] + x[c + 1]) / 3.0f;
        o[w - 1] = (x[w - 2] + x[w - 1] + x[w - 1]) / 3.0f;
    }
}

// the largest tile whose buffers a thread keeps (about 40 MB of them; a Detector branch's
// 4096 x 32 tile needs 3 MB)
constexpr long KEPT_PIXELS = 1L << 21;

// one thread's buffers, kept between tiles (a Detector branch's thread calls this for
// every tile; fresh buffers cost page faults each time)
struct buffers {
    std::vector<uint32_t> keys, scratch;
    std::vector<float> floors, down, smooth, across;
    std::vector<double> csum;
};

} // namespace

void pulse_contrast(const float* tile_db,
                    long rows,
                    long cols,
                    long floor_rows,
                    long context_rows,
                    const std::vector<long>& gaps,
                    float* power,
                    float* contrast)
{
    if (rows < 1 || cols < 1)
        throw std::invalid_argument("pulse_contrast: the tile must have rows and columns, not " +
                                    std::to_string(rows) + " x " + std::to_string(cols));
    if (floor_rows < 1 || context_rows < 1)
        throw std::invalid_argument("pulse_contrast: floor_rows and context_rows must be >= 1");
    if (gaps.empty() || *std::min_element(gaps.begin(), gaps.end()) < 0)
        throw std::invalid_argument("pulse_contrast: gaps must be one or more rows >= 0");
    // a window or gap past the tile reads nothing either way: clamped, no index can overflow
    const long n = rows, w = cols, k = std::min(context_rows, n + 1);

    // 1. linear power over each column's floor: the median / ln 2 of its floor_rows-row
    // block (a shorter remainder joins the block before), never under half the median floor
    thread_local buffers buf;
    detail::ten_to_tenths(tile_db, n * w, power); // >= 0, never NaN: keys sort as values
    const long blocks = std::max(n - floor_rows, 0L) / floor_rows + 1;
    const float ln2 = static_cast<float>(std::log(2.0));
    buf.floors.resize(w);
    for (long b = 0; b < blocks; b++) {
        const long r0 = b * floor_rows, r1 = b + 1 == blocks ? n : r0 + floor_rows, m = r1 - r0;
        const long stride = m + 16; // columns not a multiple of 4 kB apart: no cache-set aliasing
        buf.keys.resize(stride * w);
        for (long r = r0; r < r1; r++) // column by column
            for (long c = 0; c < w; c++)
                buf.keys[c * stride + r - r0] = key_of(power[r * w + c]);
        for (long c = 0; c < w; c++)
            buf.floors[c] = median_of(buf.keys.data() + c * stride, m, buf.scratch) / ln2;
        for (long c = 0; c < w; c++)
            buf.keys[c] = key_of(buf.floors[c]);
        const float least = median_of(buf.keys.data(), w, buf.scratch) / 2.0f;
        for (long c = 0; c < w; c++)
            buf.floors[c] = std::max(std::max(buf.floors[c], least), 1e-30f);
        for (long r = r0; r < r1; r++)
            for (long c = 0; c < w; c++)
                power[r * w + c] /= buf.floors[c];
    }

    // 2. the 2 x 3 mean (the row and the row before it, the first row its own before;
    // then across), and the 3-column mean whose k-row windows are the background
    buf.down.resize(n * w);
    buf.smooth.resize(n * w);
    buf.across.resize(n * w);
    for (long r = 0; r < n; r++) {
        const float* before = power + (r ? r - 1 : 0) * w;
        for (long c = 0; c < w; c++)
            buf.down[r * w + c] = (before[c] + power[r * w + c]) / 2.0f;
    }
    mean_of_3_across(buf.down.data(), n, w, buf.smooth.data());
    mean_of_3_across(power, n, w, buf.across.data());
    buf.csum.resize((n + 1) * w);
    std::fill(buf.csum.begin(), buf.csum.begin() + w, 0.0);
    for (long r = 0; r < n; r++)
        for (long c = 0; c < w; c++)
            buf.csum[(r + 1) * w + c] = buf.csum[r * w + c] + static_cast<double>(buf.across[r * w + c]);
    const double* csum = buf.csum.data();
    const float* smooth = buf.smooth.data();

    // the background: the higher mean of the k rows ending g before the pixel and the k
    // starting g after it (the rows of each inside the tile), never under the floor; the
    // contrast: the best ratio over the gaps
    std::fill(contrast, contrast + n * w, 0.0f);
    for (long gap : gaps) {
        const long g = std::min(gap, n + 1);
        for (long r = 0; r < n; r++) {
            const long b0 = std::clamp(r - g - k, 0L, n), b1 = std::clamp(r - g, 0L, n);
            const long a0 = std::clamp(r + 1 + g, 0L, n), a1 = std::clamp(r + 1 + g + k, 0L, n);
            const double nb = static_cast<double>(std::max(b1 - b0, 1L));
            const double na = static_cast<double>(std::max(a1 - a0, 1L));
            const double *s0 = csum + b0 * w, *s1 = csum + b1 * w, *t0 = csum + a0 * w, *t1 = csum + a1 * w;
            const float* sm = smooth + r * w;
            float* out = contrast + r * w;
            for (long c = 0; c < w; c++) {
                const float before = static_cast<float>((s1[c] - s0[c]) / nb);
                const float after = static_cast<float>((t1[c] - t0[c]) / na);
                const float background = std::max(std::max(before, after), 1.0f);
                out[c] = std::max(out[c], sm[c] / background);
            }
        }
    }
    if (n * w > KEPT_PIXELS)
        buf = buffers(); // a tile far taller than a Detector's: its buffers are not kept
}

} // namespace rfdetect
} // namespace gr
