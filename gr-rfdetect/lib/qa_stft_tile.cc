/* C++ QA of the STFT Tile block in a real flowgraph: vector source (with tags) ->
 * stft_tile -> vector sink. Rows equal the kernel's own, row count n/hop, tags moved
 * to their rows, rx_time corrected, bad parameters named. */
#include <gnuradio/blocks/vector_sink.h>
#include <gnuradio/blocks/vector_source.h>
#include <gnuradio/rfdetect/stft_rows.h>
#include <gnuradio/rfdetect/stft_tile.h>
#include <gnuradio/top_block.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <stdexcept>

#include "qa_check.h"

int main()
{
    const int N = 1024, HOP = 512, W = 512, ROWS = 300;
    const double RATE = 2e6;
    std::vector<gr_complex> x(ROWS * HOP + 100); // a partial row at the end: no row
    unsigned seed = 7;
    for (size_t i = 0; i < x.size(); i++) {
        seed = seed * 1664525u + 1013904223u;
        float n = ((seed >> 8) & 0xffff) / 65536.0f - 0.5f;
        x[i] = std::polar(0.5f, (float)(2 * M_PI * 0.3 * i)) + gr_complex(n, 0.5f * n);
    }
    std::vector<gr::tag_t> tags(3);
    tags[0].offset = 1000; // row 1; its first new sample is 512
    tags[0].key = pmt::intern("rx_time");
    tags[0].value = pmt::make_tuple(pmt::from_uint64(1700000000), pmt::from_double(0.25));
    tags[1].offset = 1000;
    tags[1].key = pmt::intern("rx_rate"); // comes first: rx_time uses it
    tags[1].value = pmt::from_double(RATE);
    tags[2].offset = 70000; // row 136
    tags[2].key = pmt::intern("rx_freq");
    tags[2].value = pmt::from_double(915e6);

    auto tb = gr::make_top_block("qa_stft_tile");
    auto src = gr::blocks::vector_source_c::make(x, false, 1, tags);
    auto stft = gr::rfdetect::stft_tile::make(N, HOP, "hann", W, "mean", "floor", -10, 50, 0, 2);
    auto snk = gr::blocks::vector_sink_f::make(W);
    tb->connect(src, 0, stft, 0);
    tb->connect(stft, 0, snk, 0);
    tb->run();

    const std::vector<float>& rows = snk->data();
    CHECK(rows.size() == (size_t)ROWS * W);

    // the same rows from the kernel directly (history: fft_size-hop zeros first)
    std::vector<gr_complex> padded(N - HOP, 0);
    padded.insert(padded.end(), x.begin(), x.end());
    auto w = gr::rfdetect::stft_window("hann", N);
    double s = 0;
    for (int i = 0; i < N; i++) {
        s += (double)w[i] * w[i];
        if (i % 2)
            w[i] = -w[i];
    }
    gr::rfdetect::stft_rows k(N, W, false, true, -10, 50, (float)(1.0 / s), w.data());
    std::vector<float> ref(ROWS * W);
    k.rows(padded.data(), ROWS, HOP, ref.data());
    CHECK(rows.size() == ref.size() &&
          std::memcmp(rows.data(), ref.data(), ref.size() * sizeof(float)) == 0);

    bool params = false, time_ok = false, freq_ok = false, rate_ok = false;
    for (const auto& t : snk->tags()) {
        const std::string key = pmt::symbol_to_string(t.key);
        if (key == "rfdetect_stft") {
            params = t.offset == 0 &&
                     pmt::to_long(pmt::dict_ref(t.value, pmt::intern("fft_size"), pmt::PMT_NIL)) == N &&
                     !pmt::dict_has_key(t.value, pmt::intern("samp_rate"));
        } else if (key == "rx_time") {
            double want = 0.25 + (512.0 - 1000.0) / RATE; // 1700000000.25 - 244 us
            time_ok = t.offset == 1 &&
                      pmt::to_uint64(pmt::tuple_ref(t.value, 0)) == 1700000000 &&
                      std::fabs(pmt::to_double(pmt::tuple_ref(t.value, 1)) - want) < 1e-6;
        } else if (key == "rx_freq") {
            freq_ok = t.offset == 70000 / HOP;
        } else if (key == "rx_rate") {
            rate_ok = t.offset == 1;
        }
    }
    CHECK(params);
    CHECK(time_ok);
    CHECK(freq_ok);
    CHECK(rate_ok);
    CHECK(std::fabs(stft->samp_rate() - RATE) < 1e-9);
    CHECK(stft->threads() == 2);

    bool named = false;
    try {
        gr::rfdetect::stft_tile::make(1000, 500);
    } catch (const std::invalid_argument& e) {
        named = std::strstr(e.what(), "fft_size=1000 must be a power of two") != nullptr;
    }
    CHECK(named);
    named = false;
    try {
        gr::rfdetect::stft_tile::make(N, HOP, "hann", W, "mean", "floor", -10, 50, 0, -1);
    } catch (const std::invalid_argument& e) {
        named = std::strstr(e.what(), "threads=-1") != nullptr;
    }
    CHECK(named);

    // a second run of the same flowgraph: the helper threads stop with the flowgraph and
    // start again with it; the rows go on where they were
    src->rewind();
    tb->run();
    CHECK(snk->data().size() == 2 * (size_t)ROWS * W);

    return qa_result("qa_stft_tile");
}
