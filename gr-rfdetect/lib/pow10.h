/* 10 ** (dB / 10) for the model-free kernels (carrier_power.cc, pulse_contrast.cc): a float32
 * exp2 of their own, within an ulp of the exact value of the float32 dB / 10 (NumPy's float32
 * power, the kernels' reference, is too; glibc's powf, which this replaces, took a third of the
 * carrier kernel's time). Internal to lib/ (not installed); built without -ffp-contract=fast.
 */
#ifndef INCLUDED_RFDETECT_POW10_H
#define INCLUDED_RFDETECT_POW10_H

#include <cmath>
#include <cstdint>
#include <cstring>

namespace gr {
namespace rfdetect {
namespace detail {
namespace {

// log2(10), and 1.5 * 2^52: added to and taken from a double of magnitude under 2^51, it
// rounds that double to an integer in two vectorisable adds
constexpr double LOG2_10 = 3.32192809488736234787;
constexpr double ROUNDER = 6755399441055744.0;
// ln(2)^k / k!, k = 7 down to 1: 2^f = sum of them times f^k, for |f| <= 1/2 within 6e-9
constexpr float EXP2_TAYLOR[] = { 1.52527338040598e-5f, 1.54035303933816e-4f, 1.33335581464284e-3f,
                                  9.61812910762848e-3f, 5.55041086648216e-2f, 2.40226506959101e-1f,
                                  6.93147180559945e-1f };
// pow10_of_tenth's range, inside the one where its 2^n is a normal float32 (about -379 to 385
// dB: under it the result is under float32's smallest normal number, which it does not make,
// over it over float32's largest; the detectors give the kernels pixels under 300 dB). Values
// with one outside take powf
constexpr float LOWEST_FAST_DB = -370.0f;
constexpr float HIGHEST_FAST_DB = 380.0f;

// 10 ** (db / 10) with db / 10 rounded to float32 first, as NumPy's float32 arithmetic does;
// db in [LOWEST_FAST_DB, HIGHEST_FAST_DB]: 2^t, t = (db / 10) log2(10) in double, as 2^n 2^f with n the
// integer nearest t and 2^f a Taylor polynomial in float32
inline float pow10_of_tenth(float db)
{
    const double t = static_cast<double>(db / 10.0f) * LOG2_10;
    const double n = (t + ROUNDER) - ROUNDER;
    const float f = static_cast<float>(t - n);
    float p = EXP2_TAYLOR[0];
    for (int k = 1; k < 7; k++)
        p = p * f + EXP2_TAYLOR[k];
    p = p * f + 1.0f;
    const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
    float scale;
    std::memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

// p = 10 ** (db / 10) for n values: the vector loop is compiled for AVX2 as well where the
// compiler can (GCC on x86-64 glibc, whose ifuncs let the CPU pick at load time), 2.5 times the
// speed of SSE2's on the Xeon
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__GLIBC__)
__attribute__((target_clones("avx2", "default")))
#endif
void ten_to_tenths(const float* db, long n, float* p)
{
    // a value pow10_of_tenth does not take (NaN included): all n take powf. Checked first, in
    // a pass of its own: clamping inside the loop below would stop it vectorising
    int outside = 0;
    for (long c = 0; c < n; c++)
        outside |= (db[c] < LOWEST_FAST_DB) | (db[c] > HIGHEST_FAST_DB) | (db[c] != db[c]);
    if (outside) {
        for (long c = 0; c < n; c++)
            p[c] = std::pow(10.0f, db[c] / 10.0f);
        return;
    }
    for (long c = 0; c < n; c++)
        p[c] = pow10_of_tenth(db[c]);
}

} // namespace
} // namespace detail
} // namespace rfdetect
} // namespace gr

#endif
