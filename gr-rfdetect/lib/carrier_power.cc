/* The carrier detector's kernels (carrier_power.h).
 *
 * carrier_power does the arithmetic of the NumPy and SciPy calls of
 * CarrierDetector._power_numpy, so that the two agree to an ulp or two:
 * - 10 ** (dB / 10) is pow10.h's exp2: powf was a third of the kernel's time, and this is
 *   within an ulp of the exact value (NumPy's float32 power is too, and the two differ by an
 *   ulp at some pixels, as powf and NumPy did);
 * - the floors are np.median's values (radix_median.h);
 * - the running means are SciPy 1.10's uniform_filter1d: a sum in double of the window's
 *   values, then each step adds the entering value less the leaving one (their difference
 *   taken in double) and writes sum / size as float32 (_running_mean_down does the same
 *   down the columns).
 * Built without -ffp-contract=fast: a fused multiply-add would round differently.
 *
 * carrier_regions is CarrierDetector._regions_numpy's mask, 3 x 3 closing and 8-connected
 * labelling (scipy.ndimage.label's numbering: by each region's first pixel in row order)
 * with each region's bounding box, over runs of pixels rather than pixels.
 */
#include <gnuradio/rfdetect/carrier_power.h>

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
        detail::ten_to_tenths(db, w, p);
        for (long c = 0; c < w; c++)
            buf.keys[c] = detail::key_of(p[c]); // >= 0, never NaN: keys sort as values
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

namespace {

// a run of region pixels in one row: columns [start, stop)
struct pixel_run {
    long row, start, stop;
};

long root_of(std::vector<long>& parent, long i)
{
    while (parent[i] != i) {
        parent[i] = parent[parent[i]];
        i = parent[i];
    }
    return i;
}

} // namespace

std::vector<carrier_region> carrier_regions(
    const float* smooth, long rows, long cols, float level, long edge, long min_rows, int32_t* labels)
{
    if (rows < 1 || cols < 1)
        throw std::invalid_argument("carrier_regions: the map must have rows and columns, not " +
                                    std::to_string(rows) + " x " + std::to_string(cols));
    if (edge < 0 || min_rows < 0)
        throw std::invalid_argument("carrier_regions: edge and min_rows must be >= 0, not " + std::to_string(edge) +
                                    " and " + std::to_string(min_rows));
    const long n = rows, w = cols;
    std::fill(labels, labels + n * w, 0);
    std::vector<carrier_region> found;
    if (n < 3 || w < 3) // the closing erodes every edge pixel: nothing is left
        return found;

    // this thread's masks, kept between tiles: every pixel read below is written first (rows 0
    // and n - 1 of closed, always clear, are never read)
    thread_local std::vector<uint8_t> across, closed, dilated, and_across;
    across.resize(n * w);
    closed.resize(n * w);
    dilated.resize(w);
    and_across.resize(3 * w);
    // the mask, dilated by 3 x 3 (nothing outside the map): each row's mask ORed across here,
    // then three such rows ORed down (dilated_row)
    const long lo = std::min(edge, w), hi = std::max(w - edge, lo);
    for (long r = 0; r < n; r++) {
        const float* s = smooth + r * w;
        uint8_t* a = across.data() + r * w;
        uint8_t prev = 0, cur = lo < hi && lo == 0 ? s[0] > level : 0;
        for (long c = 0; c < w; c++) {
            const uint8_t next = c + 1 < hi && c + 1 >= lo ? s[c + 1] > level : 0;
            a[c] = prev | cur | next;
            prev = cur;
            cur = next;
        }
    }
    // eroded by 3 x 3 (outside the map counts as not set: the edge pixels are cleared): the
    // dilated rows ANDed across (one row at a time, into a ring of three), then down
    auto dilated_row = [&](long r, uint8_t* d) {
        const uint8_t* a = across.data() + r * w;
        for (long c = 0; c < w; c++)
            d[c] = a[c] | (r > 0 ? a[c - w] : 0) | (r + 1 < n ? a[c + w] : 0);
    };
    auto anded_row = [&](const uint8_t* d, uint8_t* out) {
        out[0] = out[w - 1] = 0;
        for (long c = 1; c + 1 < w; c++)
            out[c] = d[c - 1] & d[c] & d[c + 1];
    };
    for (long r = 0; r < 2; r++) {
        dilated_row(r, dilated.data());
        anded_row(dilated.data(), and_across.data() + r * w);
    }
    for (long r = 1; r + 1 < n; r++) {
        dilated_row(r + 1, dilated.data());
        anded_row(dilated.data(), and_across.data() + ((r + 1) % 3) * w);
        const uint8_t *up = and_across.data() + ((r - 1) % 3) * w, *mid = and_across.data() + (r % 3) * w,
                      *down = and_across.data() + ((r + 1) % 3) * w;
        uint8_t* out = closed.data() + r * w;
        for (long c = 0; c < w; c++)
            out[c] = up[c] & mid[c] & down[c];
    }

    // the runs of each row, joined to the runs of the row above that touch them (8-connected:
    // columns [start - 1, stop + 1)) with a union-find over runs
    std::vector<pixel_run> runs;
    std::vector<long> parent;
    long above_first = 0, above_end = 0;
    for (long r = 1; r + 1 < n; r++) {
        const uint8_t* m = closed.data() + r * w;
        const long first = static_cast<long>(runs.size());
        for (long c = 0; c < w;) {
            if (!m[c]) {
                c++;
                continue;
            }
            long stop = c;
            while (stop < w && m[stop])
                stop++;
            runs.push_back({ r, c, stop });
            parent.push_back(static_cast<long>(parent.size()));
            c = stop;
        }
        const long end = static_cast<long>(runs.size());
        for (long i = first, j = above_first; i < end && j < above_end;) {
            if (runs[j].stop < runs[i].start) { // ends left of this run's reach
                j++;
                continue;
            }
            if (runs[j].start > runs[i].stop) { // starts right of it
                i++;
                continue;
            }
            const long a = root_of(parent, i), b = root_of(parent, j);
            parent[std::max(a, b)] = std::min(a, b);
            if (runs[j].stop <= runs[i].stop)
                j++;
            else
                i++;
        }
        above_first = first;
        above_end = end;
    }

    // labels in the order of each region's first run (its first pixel in row order: the
    // root, the lowest run index, is that run), and each region's bounding box
    std::vector<int32_t> label_of(runs.size(), 0);
    for (long i = 0; i < static_cast<long>(runs.size()); i++) {
        const long root = root_of(parent, i);
        if (root == i) {
            label_of[i] = static_cast<int32_t>(found.size()) + 1;
            found.push_back({ label_of[i], runs[i].row, runs[i].row + 1, runs[i].start, runs[i].stop });
        } else {
            label_of[i] = label_of[root];
            carrier_region& g = found[label_of[i] - 1];
            g.y1 = runs[i].row + 1;
            g.x0 = std::min(g.x0, runs[i].start);
            g.x1 = std::max(g.x1, runs[i].stop);
        }
        std::fill(labels + runs[i].row * w + runs[i].start, labels + runs[i].row * w + runs[i].stop, label_of[i]);
    }
    found.erase(std::remove_if(found.begin(), found.end(),
                               [&](const carrier_region& g) { return g.y1 - g.y0 < min_rows; }),
                found.end());
    return found;
}

} // namespace rfdetect
} // namespace gr
