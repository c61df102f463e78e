/* C++ QA of the pulse contrast kernel (no GNU Radio, no FFTW). The kernel against its
 * NumPy reference lives in tests/test_pulse_detector.py. */
#include <gnuradio/rfdetect/pulse_contrast.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <stdexcept>
#include <vector>

#include "qa_check.h"

using gr::rfdetect::pulse_contrast;

int main()
{
    // exponential noise of mean 1 (a spectrogram's bins), in dB; a 20 dB pulse two rows
    // long over columns 14-16 of rows 200-201
    const long rows = 512, cols = 32;
    std::mt19937 rng(7);
    std::exponential_distribution<float> noise(1.0f);
    std::vector<float> tile(rows * cols), power(rows * cols), contrast(rows * cols);
    for (auto& v : tile)
        v = 10.0f * std::log10(noise(rng));
    for (long r = 200; r < 202; r++)
        for (long c = 14; c < 17; c++)
            tile[r * cols + c] = 20.0f;
    pulse_contrast(tile.data(), rows, cols, 256, 6, { 2, 5 }, power.data(), contrast.data());

    // power over the floor: noise has a mean near 1 (the floor is the mean of noise)
    double mean = 0;
    for (long r = 0; r < 100; r++)
        for (long c = 0; c < cols; c++)
            mean += power[r * cols + c];
    mean /= 100.0 * cols;
    CHECK(mean > 0.8 && mean < 1.25);
    // the pulse stands 9 dB over its background; noise away from it does not
    CHECK(10.0f * std::log10(contrast[201 * cols + 15]) > 9.0f);
    float most = 0;
    for (long r = 0; r < 150; r++)
        for (long c = 0; c < cols; c++)
            most = std::max(most, contrast[r * cols + c]);
    CHECK(10.0f * std::log10(most) < 9.0f);

    // bad sizes are refused, not read past
    bool threw = false;
    try {
        pulse_contrast(tile.data(), 0, cols, 256, 6, { 2 }, power.data(), contrast.data());
    } catch (const std::invalid_argument&) {
        threw = true;
    }
    CHECK(threw);
    threw = false;
    try {
        pulse_contrast(tile.data(), rows, cols, 256, 6, {}, power.data(), contrast.data());
    } catch (const std::invalid_argument&) {
        threw = true;
    }
    CHECK(threw);

    return qa_result("qa_pulse_contrast");
}
