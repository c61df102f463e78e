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

    // regions: a map of 12 x 10 at 0 with three blobs at 5 (level 2, edge 1): A (rows 2-6,
    // columns 2-3), B (rows 4-8, column 5: one column apart from A, so the closing joins
    // them into one region), C (rows 9-10, column 9: the edge column, left out)
    using gr::rfdetect::carrier_region;
    using gr::rfdetect::carrier_regions;
    const long rr = 12, rc = 10;
    std::vector<float> map(rr * rc, 0.0f);
    std::vector<int32_t> labels(rr * rc, -1);
    for (long r = 2; r <= 6; r++)
        map[r * rc + 2] = map[r * rc + 3] = 5.0f;
    for (long r = 4; r <= 8; r++)
        map[r * rc + 5] = 5.0f;
    for (long r = 9; r <= 10; r++)
        map[r * rc + 9] = 5.0f;
    std::vector<carrier_region> found = carrier_regions(map.data(), rr, rc, 2.0f, 1, 0, labels.data());
    CHECK(found.size() == 1);
    CHECK(found[0].label == 1 && found[0].y0 == 2 && found[0].y1 == 9 && found[0].x0 == 2 && found[0].x1 == 6);
    long labelled = 0;
    for (long i = 0; i < rr * rc; i++) {
        CHECK(labels[i] == 0 || labels[i] == 1);
        labelled += labels[i] == 1;
    }
    CHECK(labels[4 * rc + 4] == 1 && labels[11 * rc + 9] == 0 && labelled >= 5 * 2 + 5);
    // too short for min_rows 8: labelled, not returned
    found = carrier_regions(map.data(), rr, rc, 2.0f, 1, 8, labels.data());
    CHECK(found.empty() && labels[4 * rc + 4] == 1);
    // the edge columns: a stroke in column 1 is a region with none left out or one, not with two
    std::vector<float> stroke(rr * rc, 0.0f);
    for (long r = 2; r <= 8; r++)
        stroke[r * rc + 1] = 5.0f;
    CHECK(carrier_regions(stroke.data(), rr, rc, 2.0f, 0, 0, labels.data()).size() == 1);
    CHECK(carrier_regions(stroke.data(), rr, rc, 2.0f, 1, 0, labels.data()).size() == 1);
    CHECK(carrier_regions(stroke.data(), rr, rc, 2.0f, 2, 0, labels.data()).empty());
    threw = false;
    try {
        carrier_regions(map.data(), rr, rc, 2.0f, -1, 0, labels.data());
    } catch (const std::invalid_argument&) {
        threw = true;
    }
    CHECK(threw);

    return qa_result("qa_carrier_power");
}
