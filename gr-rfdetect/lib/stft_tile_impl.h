#ifndef INCLUDED_RFDETECT_STFT_TILE_IMPL_H
#define INCLUDED_RFDETECT_STFT_TILE_IMPL_H

#include <gnuradio/rfdetect/stft_rows.h>
#include <gnuradio/rfdetect/stft_tile.h>
#include <pmt/pmt.h>
#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace gr {
namespace rfdetect {

class stft_tile_impl : public stft_tile
{
private:
    const int d_fft_size, d_hop, d_width;
    // written by work() (rx_rate tags), read by samp_rate() from any thread
    std::atomic<double> d_samp_rate;
    pmt::pmt_t d_params; // the rfdetect_stft tag's dict
    std::vector<std::unique_ptr<stft_rows>> d_parts; // one kernel state per thread
    std::unique_ptr<running_floor> d_running;        // normalisation "running_floor" only
    std::vector<float> d_floors;                      // its per-row floors

    // helper threads, running from start() to stop() (GNU Radio calls both on the
    // block's own thread, before its first and after its last work()): each waits for a
    // new generation, then takes rows of the current call from the shared counter with
    // its own kernel state
    std::vector<std::thread> d_workers;
    std::mutex d_mutex;
    std::condition_variable d_go, d_done;
    uint64_t d_generation = 0;
    bool d_open = false; // the call still takes helpers (until the block thread ran out of rows)
    int d_active = 0;    // helpers making rows of this call
    int d_wanted = 0;    // helpers asked to join this call
    bool d_stop = false;
    const gr_complex* d_x = nullptr;
    float* d_out = nullptr;
    float* d_floors_out = nullptr;
    long d_nrows = 0;
    std::atomic<long> d_next{ 0 };

    void worker(int part, uint64_t seen);
    void stop_workers();
    void compute(const gr_complex* x, long n_rows, float* out);
    void forward_tags(int noutput_items);

public:
    stft_tile_impl(int fft_size,
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
                   float bin_scale);
    ~stft_tile_impl() override;

    int fft_size() const override { return d_fft_size; }
    int hop() const override { return d_hop; }
    int width() const override { return d_width; }
    int threads() const override { return (int)d_parts.size(); }
    double samp_rate() const override { return d_samp_rate.load(); }

    bool start() override;
    bool stop() override;

    int work(int noutput_items,
             gr_vector_const_void_star& input_items,
             gr_vector_void_star& output_items) override;
};

} // namespace rfdetect
} // namespace gr

#endif /* INCLUDED_RFDETECT_STFT_TILE_IMPL_H */
