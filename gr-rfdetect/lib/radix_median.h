/* The medians of gr-rfdetect's model-free kernels (pulse_contrast.cc, carrier_power.cc):
 * np.median's value of float32 values >= 0, by a radix selection on their bit patterns.
 * Internal to lib/ (not installed).
 */
#ifndef INCLUDED_RFDETECT_RADIX_MEDIAN_H
#define INCLUDED_RFDETECT_RADIX_MEDIAN_H

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

namespace gr {
namespace rfdetect {
namespace detail {

// The k-th smallest (from 0) of n keys: the bit patterns of values >= 0 and not NaN, which
// sort as the values do. A radix selection, a byte at a time from the top: count the keys
// by byte (four count tables, so that a run of keys in one bucket does not wait on its own
// increments), keep those in the bucket that holds the k-th (std::nth_element's partitions
// took most of the kernel's time)
inline uint32_t kth_smallest(const uint32_t* keys, long n, long k, std::vector<uint32_t>& scratch)
{
    scratch.resize(2 * n);
    const uint32_t* cur = keys;
    uint32_t* kept = scratch.data();
    uint32_t prefix = 0;
    for (int shift = 24;; shift -= 8) {
        uint32_t count[4][256] = {};
        for (long i = 0; i < n; i++)
            count[i & 3][(cur[i] >> shift) & 255]++;
        uint32_t byte = 0;
        for (;; byte++) {
            const long in_bucket = long(count[0][byte]) + count[1][byte] + count[2][byte] + count[3][byte];
            if (k < in_bucket)
                break;
            k -= in_bucket;
        }
        prefix |= byte << shift;
        if (shift == 0)
            return prefix;
        long m = 0;
        for (long i = 0; i < n; i++) { // branch-free: every key written, the bucket's kept
            kept[m] = cur[i];
            m += ((cur[i] >> shift) & 255) == byte;
        }
        cur = kept;
        n = m;
        kept = kept == scratch.data() ? scratch.data() + scratch.size() / 2 : scratch.data();
    }
}

inline float value_of(uint32_t key)
{
    float v;
    std::memcpy(&v, &key, sizeof v);
    return v;
}

// np.median of n >= 1 keys' values: the middle one, or the float32 mean of the two middle
// ones (the lower: the largest key under the upper, where at least n/2 keys are under it)
inline float median_of(const uint32_t* keys, long n, std::vector<uint32_t>& scratch)
{
    const uint32_t upper = kth_smallest(keys, n, n / 2, scratch);
    if (n % 2)
        return value_of(upper);
    long under = 0;
    uint32_t lower = 0;
    for (long i = 0; i < n; i++) {
        const bool is_under = keys[i] < upper;
        under += is_under;
        lower = is_under ? std::max(lower, keys[i]) : lower;
    }
    return ((under >= n / 2 ? value_of(lower) : value_of(upper)) + value_of(upper)) / 2.0f;
}

inline uint32_t key_of(float v)
{
    uint32_t key;
    std::memcpy(&key, &v, sizeof key);
    return key;
}

} // namespace detail
} // namespace rfdetect
} // namespace gr

#endif
