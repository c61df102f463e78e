/* C++ QA of the carrier power kernel (no GNU Radio, no FFTW). The kernel against its NumPy
 * and SciPy reference, within POWER_TOLERANCE, lives in tests/test_carrier_detector.py. */
#include <gnuradio/rfdetect/carrier_power.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <stdexcept>
#include <vector>

#include "qa_check.h"

using gr::rfdetect::carrier_power;

int main()
{
    // exponential noise of mean 1 (a spectrogram's bins), in dB, 3 dB higher in the second
    // half of the rows (a receiver's gain step); a carrier 10 dB over the noise in column 40
    // of rows 100-299
    const long rows = 400, cols = 256;
    std::mt19937 rng(11);
    std::exponential_distribution<float> noise(1.0f);
    std::vector<float> tile(rows * cols), power(rows * cols), smooth(rows * cols);
    for (long r = 0; r < rows; r++)
        for (long c = 0; c < cols; c++)
            tile[r * cols + c] = 10.0f * std::log10(noise(rng)) + (r >= 200 ? 3.0f : 0.0f);
    for (long r = 100; r < 300; r++)
        tile[r * cols + 40] = 10.0f;
    carrier_power(tile.data(), rows, cols, 8, power.data(), smooth.data());

    // power over each row's floor: the noise's mean near 1 on both sides of the gain step
    for (long r0 : { 0L, 300L }) {
        double mean = 0;
        for (long r = r0; r < r0 + 100; r++)
            for (long c = 60; c < cols; c++)
                mean += power[r * cols + c];
        mean /= 100.0 * (cols - 60);
        CHECK(mean > 0.85 && mean < 1.2);
    }
    // smoothed (8 rows, then 3 columns: the carrier's 10 and the noise's 1 beside it), the
    // carrier stands about 6 dB over the floor for its rows only, the noise under 4 dB
    CHECK(10.0f * std::log10(smooth[150 * cols + 40]) > 5.0f); // before the gain step
    CHECK(10.0f * std::log10(smooth[20 * cols + 40]) < 4.0f);
    float most = 0;
    for (long r = 0; r < rows; r++)
        for (long c = 60; c < cols; c++)
            most = std::max(most, smooth[r * cols + c]);
    CHECK(10.0f * std::log10(most) < 4.0f);

    // a flat tile: power ln 2 everywhere, and its means the same
    std::vector<float> flat(16 * 5, -40.0f), fp(16 * 5), fs(16 * 5);
    carrier_power(flat.data(), 16, 5, 8, fp.data(), fs.data());
    for (long i = 0; i < 16 * 5; i++)
        CHECK(std::fabs(fp[i] - std::log(2.0f)) < 1e-6f && std::fabs(fs[i] - fp[i]) < 1e-6f);

    // bad sizes are refused, not read past
    bool threw = false;
    try {
        carrier_power(tile.data(), rows, 0, 8, power.data(), smooth.data());
    } catch (const std::invalid_argument&) {
        threw = true;
    }
    CHECK(threw);
    threw = false;
    try {
        carrier_power(tile.data(), rows, cols, 0, power.data(), smooth.data());
    } catch (const std::invalid_argument&) {
        threw = true;
    }
    CHECK(threw);

    return qa_result("qa_carrier_power");
}
