/* The medians of gr-rfdetect's model-free kernels (pulse_contrast.cc, carrier_power.cc):
 * np.median's value of float32 values >= 0, by a selection on their bit patterns.
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

// under this many keys, a selection on them all beats counting 4096 buckets
constexpr long SMALL_SELECTION = 64;

// The k-th smallest (from 0) of n keys, the bit patterns of values >= 0 and not NaN, which
// sort as the values do; and, where k > 0, the (k-1)-th in below. A radix selection on the
// top 12 bits (sign, exponent, 3 bits of mantissa: a spectrogram row's values spread over
// a few hundred such buckets), then std::nth_element on the bucket that holds the k-th (a
// selection a byte at a time, and nth_element on all n, both took twice as long)
inline uint32_t kth_smallest(const uint32_t* keys, long n, long k, std::vector<uint32_t>& scratch,
                             uint32_t* below = nullptr)
{
    constexpr int SHIFT = 20;
    scratch.resize(n);
    if (n <= SMALL_SELECTION) { // fewer keys than buckets: nth_element on them all
        std::copy(keys, keys + n, scratch.begin());
        std::nth_element(scratch.begin(), scratch.begin() + k, scratch.begin() + n);
        if (below && k > 0)
            *below = *std::max_element(scratch.begin(), scratch.begin() + k);
        return scratch[k];
    }
    thread_local std::vector<uint32_t> count;
    count.assign(1u << (32 - SHIFT), 0);
    for (long i = 0; i < n; i++)
        count[keys[i] >> SHIFT]++;
    uint32_t bucket = 0;
    long before = 0; // keys in the buckets under the k-th's
    while (k - before >= long(count[bucket]))
        before += count[bucket++];
    long m = 0;
    for (long i = 0; i < n; i++) { // branch-free: every key written, the bucket's kept
        scratch[m] = keys[i];
        m += (keys[i] >> SHIFT) == bucket;
    }
    const long at = k - before;
    std::nth_element(scratch.begin(), scratch.begin() + at, scratch.begin() + m);
    const uint32_t kth = scratch[at];
    if (below && k > 0) {
        if (at > 0) { // the (k-1)-th is the largest of the bucket's keys before the k-th
            *below = *std::max_element(scratch.begin(), scratch.begin() + at);
        } else { // the largest key of the buckets under it
            uint32_t most = 0;
            for (long i = 0; i < n; i++)
                most = (keys[i] >> SHIFT) < bucket ? std::max(most, keys[i]) : most;
            *below = most;
        }
    }
    return kth;
}

inline float value_of(uint32_t key)
{
    float v;
    std::memcpy(&v, &key, sizeof v);
    return v;
}

// np.median of n >= 1 keys' values: the middle one, or the float32 mean of the two middle ones
inline float median_of(const uint32_t* keys, long n, std::vector<uint32_t>& scratch)
{
    uint32_t lower = 0;
    const uint32_t upper = kth_smallest(keys, n, n / 2, scratch, n % 2 ? nullptr : &lower);
    if (n % 2)
        return value_of(upper);
    return (value_of(lower) + value_of(upper)) / 2.0f;
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
