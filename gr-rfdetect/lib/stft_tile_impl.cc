/* The STFT Tile as a C++ sync_decimator over the row kernel (stft_rows.cc).
 *
 * History fft_size-hop+1: each output row's frame is the hop new samples plus the
 * fft_size-hop before them, and GNU Radio's initial history is zeros, which is the
 * stream "preceded by fft_size-hop zeros" of the row convention. No Python runs in
 * work(); the block asks for rows in aligned batches (ALIGN_SAMPLES) so that GNU Radio's
 * default buffers give it enough rows per call (the Python block needed a 262k-sample
 * history and a 2 M-sample buffer upstream to amortise its per-call cost). */
#include "stft_tile_impl.h"

#include <gnuradio/io_signature.h>
#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace gr {
namespace rfdetect {

namespace {
// Rows a thread takes at a time from the shared counter: small, so that threads finish a
// call together.
constexpr long CHUNK_ROWS = 2;
// Fewer rows than this run on the calling thread alone: waking a helper costs more than
// it saves on a row or two (GNU Radio's default buffers hand over a few rows per call).
constexpr long SPLIT_ROWS = 4;
// the output buffer the Python block asked for: the Detector downstream (Python) then
// gets many rows per call
constexpr int OUTPUT_ROWS = 1024;
// Rows are asked for in batches of about this many samples (set_alignment). GNU Radio
// sizes the buffer before a decimator at twice decimation*output_multiple+history, so
// without it the buffer holds three rows and each call wakes three threads for two rows
// (0.3x the fft_vcc chain with default buffers). Unlike set_output_multiple, alignment
// lets the scheduler hand over fewer rows, so no row is lost at the end of a stream.
constexpr long ALIGN_SAMPLES = 1 << 16;
// one FFTW plan and frame per thread; more threads than this is a typo
constexpr int MAX_THREADS = 64;
const pmt::pmt_t RX_TIME = pmt::intern("rx_time");
const pmt::pmt_t RX_FREQ = pmt::intern("rx_freq");
const pmt::pmt_t RX_RATE = pmt::intern("rx_rate");
const pmt::pmt_t LENGTH = pmt::intern("rfdetect_length");
const pmt::pmt_t STFT_TAG = pmt::intern("rfdetect_stft");
} // namespace

stft_tile::sptr stft_tile::make(int fft_size,
                                int hop,
                                const std::string& window,
                                int width,
                                const std::string& pooling,
                                const std::string& normalisation,
                                float db_low,
                                float db_high,
                                double samp_rate,
                                int threads,
                                const std::vector<float>& window_taps,
                                float bin_scale)
{
    // check before the base classes see a width of 0 or a negative hop
    std::string problems = stft_param_problems(
        fft_size, hop, window, width, pooling, normalisation, db_low, db_high);
    if (!problems.empty())
        throw std::invalid_argument("invalid spectrogram parameters: " + problems);
    if (!window_taps.empty() && (int)window_taps.size() != fft_size)
        throw std::invalid_argument("window_taps has " + std::to_string(window_taps.size()) +
                                    " taps, fft_size=" + std::to_string(fft_size));
    if (threads < 0 || threads > MAX_THREADS)
        throw std::invalid_argument("threads=" + std::to_string(threads) +
                                    " must be between 0 (up to 2) and " +
                                    std::to_string(MAX_THREADS));
    if (!(samp_rate >= 0)) // NaN too
        throw std::invalid_argument("samp_rate=" + std::to_string(samp_rate) +
                                    " must be >= 0 (0: unknown)");
    return gnuradio::make_block_sptr<stft_tile_impl>(fft_size,
                                                     hop,
                                                     window,
                                                     width,
                                                     pooling,
                                                     normalisation,
                                                     db_low,
                                                     db_high,
                                                     samp_rate,
                                                     threads,
                                                     window_taps,
                                                     bin_scale);
}

stft_tile_impl::stft_tile_impl(int fft_size,
                               int hop,
                               const std::string& window,
                               int width,
                               const std::string& pooling,
                               const std::string& normalisation,
                               float db_low,
                               float db_high,
                               double samp_rate,
                               int threads,
                               const std::vector<float>& window_taps,
                               float bin_scale)
    : gr::sync_decimator("stft_tile",
                         gr::io_signature::make(1, 1, sizeof(gr_complex)),
                         gr::io_signature::make(1, 1, sizeof(float) * width),
                         hop),
      d_fft_size(fft_size),
      d_hop(hop),
      d_width(width),
      d_samp_rate(samp_rate)
{
    std::vector<float> w = window_taps.empty() ? stft_window(window, fft_size) : window_taps;
    if (bin_scale <= 0) { // |X|^2 / sum(w^2): white noise of variance s^2 reads s^2
        double s = 0;
        for (float v : w)
            s += (double)v * v;
        bin_scale = (float)(1.0 / s);
    }
    // multiplying by (-1)^n moves DC to the middle bin: the FFT shift for free
    for (int i = 1; i < fft_size; i += 2)
        w[i] = -w[i];
    if (threads <= 0)
        threads = std::max(1, std::min(2, (int)std::thread::hardware_concurrency()));
    for (int t = 0; t < threads; t++)
        d_parts.emplace_back(new stft_rows(fft_size,
                                           width,
                                           pooling == "max",
                                           normalisation == "floor",
                                           db_low,
                                           db_high,
                                           bin_scale,
                                           w.data()));

    if (normalisation == "running_floor")
        d_running.reset(new running_floor(width, db_low, db_high));

    set_history(fft_size - hop + 1);
    set_min_output_buffer(OUTPUT_ROWS);
    set_alignment((int)std::max<long>(1, std::min<long>(ALIGN_SAMPLES / hop, OUTPUT_ROWS / 4)));
    set_tag_propagation_policy(TPP_DONT);

    d_params = pmt::make_dict();
    d_params = pmt::dict_add(d_params, pmt::intern("fft_size"), pmt::from_long(fft_size));
    d_params = pmt::dict_add(d_params, pmt::intern("hop"), pmt::from_long(hop));
    d_params = pmt::dict_add(d_params, pmt::intern("window"), pmt::intern(window));
    d_params = pmt::dict_add(d_params, pmt::intern("width"), pmt::from_long(width));
    d_params = pmt::dict_add(d_params, pmt::intern("pooling"), pmt::intern(pooling));
    d_params =
        pmt::dict_add(d_params, pmt::intern("normalisation"), pmt::intern(normalisation));
    d_params = pmt::dict_add(d_params, pmt::intern("db_low"), pmt::from_double(db_low));
    d_params = pmt::dict_add(d_params, pmt::intern("db_high"), pmt::from_double(db_high));
    if (samp_rate > 0) // the Detector's sample rate when it has none of its own
        d_params =
            pmt::dict_add(d_params, pmt::intern("samp_rate"), pmt::from_double(samp_rate));
}

stft_tile_impl::~stft_tile_impl() { stop_workers(); }

bool stft_tile_impl::start()
{
    stop_workers(); // a start() without a stop() before it
    {
        std::lock_guard<std::mutex> lock(d_mutex);
        d_stop = false;
    }
    try {
        // each helper waits for the generation after this one
        for (int t = 1; t < (int)d_parts.size(); t++)
            d_workers.emplace_back(&stft_tile_impl::worker, this, t, d_generation);
    } catch (...) { // no thread to be had: join the ones started, then say so
        stop_workers();
        throw;
    }
    return sync_decimator::start();
}

bool stft_tile_impl::stop()
{
    stop_workers();
    return sync_decimator::stop();
}

void stft_tile_impl::stop_workers()
{
    {
        std::lock_guard<std::mutex> lock(d_mutex);
        d_stop = true;
    }
    d_go.notify_all();
    for (auto& t : d_workers)
        t.join();
    d_workers.clear();
}

void stft_tile_impl::worker(int part, uint64_t seen)
{
    std::unique_lock<std::mutex> lock(d_mutex);
    for (;;) {
        d_go.wait(lock, [&] { return d_stop || d_generation != seen; });
        if (d_stop)
            return;
        seen = d_generation;
        if (!d_open || part > d_wanted)
            continue; // the call is done already, or has enough helpers
        d_active++;
        lock.unlock();
        d_parts[part]->rows_shared(d_x, d_nrows, d_hop, d_out, d_next, CHUNK_ROWS, d_floors_out);
        lock.lock();
        if (--d_active == 0)
            d_done.notify_one();
    }
}

void stft_tile_impl::compute(const gr_complex* x, long n_rows, float* out)
{
    float* floors = nullptr;
    if (d_running) {
        if ((long)d_floors.size() < 2 * n_rows)
            d_floors.resize(2 * (size_t)n_rows);
        floors = d_floors.data();
    }
    // d_workers is empty outside start()..stop(): the rows then run here alone
    const long helpers =
        n_rows < SPLIT_ROWS
            ? 0
            : std::min<long>((long)d_workers.size() + 1, (n_rows + CHUNK_ROWS - 1) / CHUNK_ROWS) - 1;
    if (helpers == 0) {
        d_parts[0]->rows(x, n_rows, d_hop, out, floors);
        return;
    }
    {
        std::lock_guard<std::mutex> lock(d_mutex);
        d_x = x;
        d_out = out;
        d_floors_out = floors;
        d_nrows = n_rows;
        d_next.store(0, std::memory_order_relaxed);
        d_wanted = (int)helpers;
        d_open = true;
        d_generation++;
    }
    d_go.notify_all();
    d_parts[0]->rows_shared(x, n_rows, d_hop, out, d_next, CHUNK_ROWS, floors);
    // Every row is taken: close the call and wait only for helpers still making theirs.
    // A helper the OS has not woken yet (the cores are shared with the blocks upstream)
    // finds the call closed and skips it, so this thread never waits for a wake-up.
    std::unique_lock<std::mutex> lock(d_mutex);
    d_open = false;
    d_done.wait(lock, [&] { return d_active == 0; });
}

void stft_tile_impl::forward_tags(int n)
{
    if (nitems_written(0) == 0)
        add_item_tag(0, 0, STFT_TAG, d_params);
    const uint64_t start = nitems_read(0);
    std::vector<tag_t> tags;
    get_tags_in_range(tags, 0, start, start + (uint64_t)n * d_hop);
    // rx_rate first among tags on one sample: the rx_time beside it uses the new rate
    std::stable_sort(tags.begin(), tags.end(), [](const tag_t& a, const tag_t& b) {
        if (a.offset != b.offset)
            return a.offset < b.offset;
        return pmt::eqv(a.key, RX_RATE) && !pmt::eqv(b.key, RX_RATE);
    });
    for (const tag_t& tag : tags) {
        if (!(pmt::eqv(tag.key, RX_TIME) || pmt::eqv(tag.key, RX_FREQ) ||
              pmt::eqv(tag.key, RX_RATE) || pmt::eqv(tag.key, LENGTH)))
            continue;
        const uint64_t row = tag.offset / d_hop;
        pmt::pmt_t value = tag.value;
        // A value of another shape than UHD's is forwarded as it came (the Python block
        // raised in work(), which ends the flowgraph)
        try {
            if (pmt::eqv(tag.key, RX_RATE)) {
                d_samp_rate = pmt::to_double(value); // <= 0: rx_time stays as it came
            } else if (pmt::eqv(tag.key, RX_TIME) && pmt::is_tuple(value) &&
                       pmt::length(value) >= 2) {
                // (uint64 whole seconds, double fraction) as UHD and the SigMF Source make
                // it; moved from the tag's sample to the row's first new sample, row*hop
                const double rate = d_samp_rate.load();
                const double secs = (double)pmt::to_uint64(pmt::tuple_ref(value, 0)) +
                                    pmt::to_double(pmt::tuple_ref(value, 1));
                if (rate > 0 && secs > 0) {
                    const double t =
                        secs + (double)((int64_t)(row * d_hop) - (int64_t)tag.offset) / rate;
                    const uint64_t whole = (uint64_t)t;
                    value = pmt::make_tuple(pmt::from_uint64(whole), pmt::from_double(t - whole));
                }
            }
        } catch (const std::exception&) { // pmt::wrong_type
            value = tag.value;
        }
        add_item_tag(0, row, tag.key, value);
    }
}

int stft_tile_impl::work(int noutput_items,
                         gr_vector_const_void_star& input_items,
                         gr_vector_void_star& output_items)
{
    auto in = static_cast<const gr_complex*>(input_items[0]);
    auto out = static_cast<float*>(output_items[0]);
    compute(in, noutput_items, out);
    if (d_running) // in stream order, after the threads made the call's rows
        d_running->normalise(out, d_floors.data(), noutput_items);
    forward_tags(noutput_items);
    return noutput_items;
}

} /* namespace rfdetect */
} /* namespace gr */
