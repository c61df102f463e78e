/* C++ QA of the row kernel, without GNU Radio (this program links only the kernel and
 * FFTW). The kernel against the NumPy reference lives in tests/test_spectrogram.py. */
#include <gnuradio/rfdetect/stft_rows.h>

#include <cmath>
#include <complex>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <thread>
#include <vector>

#include "qa_check.h"

using gr::rfdetect::stft_rows;

static std::vector<float> shifted(const std::vector<float>& w, float* bin_scale)
{
    double s = 0;
    std::vector<float> out(w);
    for (size_t i = 0; i < w.size(); i++) {
        s += (double)w[i] * w[i];
        if (i % 2)
            out[i] = -out[i];
    }
    *bin_scale = (float)(1.0 / s);
    return out;
}

int main()
{
    const int N = 1024, W = 256, HOP = 512, ROWS = 40;
    float bin_scale;
    auto win = shifted(gr::rfdetect::stft_window("hann", N), &bin_scale);
    CHECK(gr::rfdetect::stft_window("hann", N)[0] == 0.0f);
    CHECK(std::fabs(gr::rfdetect::stft_window("hann", N)[N / 2] - 1.0f) < 1e-7f);

    // a tone at +1/8 of the rate over noise, silence in the middle rows
    std::vector<std::complex<float>> x(ROWS * HOP + N - HOP);
    unsigned seed = 1;
    for (size_t i = 0; i < x.size(); i++) {
        seed = seed * 1103515245u + 12345u;
        float n = ((seed >> 8) & 0xffff) / 65536.0f - 0.5f;
        x[i] = std::polar(1.0f, (float)(2 * M_PI * 0.125 * i)) + std::complex<float>(n, -n);
    }
    for (int i = 20 * HOP; i < 20 * HOP + 2 * N; i++)
        x[i] = 0;

    stft_rows k(N, W, false, true, -10.f, 50.f, bin_scale, win.data());
    std::vector<float> one(ROWS * W), two(ROWS * W);
    k.rows(x.data(), ROWS, HOP, one.data());

    // the tone: column (0.125 + 0.5) * W, values in [0, 1], the peak saturating
    int peak = 0;
    for (int c = 0; c < W; c++) {
        CHECK(one[5 * W + c] >= 0.f && one[5 * W + c] <= 1.f);
        if (one[5 * W + c] > one[5 * W + peak])
            peak = c;
    }
    CHECK(peak == (int)((0.125 + 0.5) * W));
    CHECK(one[5 * W + peak] > 0.5f); // about 40 dB over this noise
    // an all-zero frame: a flat, finite row
    for (int c = 0; c < W; c++)
        CHECK(std::isfinite(one[22 * W + c]) && one[22 * W + c] == one[22 * W]);

    // two threads sharing one batch make the very same bits as one thread
    stft_rows k2(N, W, false, true, -10.f, 50.f, bin_scale, win.data());
    std::atomic<long> next{ 0 };
    long made_a = 0, made_b = 0;
    std::thread t([&] { made_a = k2.rows_shared(x.data(), ROWS, HOP, two.data(), next, 3); });
    made_b = k.rows_shared(x.data(), ROWS, HOP, two.data(), next, 3);
    t.join();
    CHECK(made_a + made_b == ROWS);
    CHECK(std::memcmp(one.data(), two.data(), one.size() * sizeof(float)) == 0);

    // bad sizes and parameters are named
    bool threw = false;
    try {
        stft_rows bad(N, 300, false, true, -10.f, 50.f, bin_scale, win.data());
    } catch (const std::invalid_argument& e) {
        threw = std::strstr(e.what(), "width=300") != nullptr;
    }
    CHECK(threw);
    auto problems =
        gr::rfdetect::stft_param_problems(1000, 512, "hann", 256, "mean", "floor", -10, 50);
    CHECK(problems.find("fft_size=1000 must be a power of two") != std::string::npos);
    CHECK(gr::rfdetect::stft_param_problems(1024, 512, "hann", 256, "mean", "floor", -10, 50)
              .empty());

    CHECK(gr::rfdetect::stft_param_problems(1024, 512, "hann", 256, "mean", "running_floor", -10, 50)
              .empty());
    CHECK(gr::rfdetect::stft_param_problems(1024, 512, "hann", 256, "mean", "tracked", -10, 50)
              .find("running_floor") != std::string::npos);

    // running_floor: without floor normalisation the kernel gives plain dB and each row's
    // (floor, quietest group); in the tone rows the floor is the noise's, 20 dB or more
    // under the tone's column
    stft_rows plain(N, W, false, false, -10.f, 50.f, bin_scale, win.data());
    std::vector<float> db(ROWS * W), floors(2 * ROWS);
    plain.rows(x.data(), ROWS, HOP, db.data(), floors.data());
    CHECK(floors[2 * 5] >= floors[2 * 5 + 1] && db[5 * W + peak] > floors[2 * 5] + 20.f);
    // a row whose floor a band-filling signal lifted 15 dB (its quietest group stayed) is
    // normalised by the quietest group plus the usual spread plus a dB, not by its floor;
    // a row where both moved 8 dB (a gain step) by its own floor
    gr::rfdetect::running_floor rf(4 * gr::rfdetect::STFT_FLOOR_GROUPS, -10.f, 50.f);
    const int RW = 4 * gr::rfdetect::STFT_FLOOR_GROUPS;
    std::vector<float> rows(3 * RW, -20.f), fl = { -30.f, -32.f, -15.f, -32.f, -22.f, -24.f };
    rf.normalise(rows.data(), fl.data(), 1);
    rf.normalise(rows.data() + RW, fl.data() + 2, 2);
    CHECK(std::fabs(rows[0] - (-20.f + 30.f + 10.f) / 60.f) < 1e-6f);      // its own floor
    CHECK(std::fabs(rows[RW] - (-20.f + 29.f + 10.f) / 60.f) < 1e-6f);     // -32 + 2 + 1
    CHECK(std::fabs(rows[2 * RW] - (-20.f + 22.f + 10.f) / 60.f) < 1e-6f); // its own floor

    return qa_result("qa_stft_rows");
}
