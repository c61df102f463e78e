/* Spectrogram rows in one pass per frame: window -> FFT (FFTW) -> power -> pooling ->
 * log10 -> noise-floor normalisation, with the frame held in cache the whole time.
 *
 * The CPU row kernel of gr-rfdetect (include/gnuradio/rfdetect/stft_rows.h). Why one
 * fused pass: on two cores the NumPy version spent half its time in four separate passes
 * over each batch of spectra (square, pool, log10, scale); fused per frame a row costs
 * about the FFT plus a third (docs/performance.md). rows_from_spectrum() in
 * python/rfdetect/dsp/spectrogram.py is the reference for the math after the FFT;
 * tests/test_spectrogram.py holds the two within KERNEL_TOLERANCE for every window,
 * pooling and normalisation. This is the C kernel it replaces (lib/stft_rows.c) line
 * for line: same operations in the same order, same -O3 -ffp-contract=fast build, so
 * the rows kept their bits (checked when it was ported).
 *
 * No GNU Radio here: the pybind11 module that `pip install` builds compiles this file
 * alone. Every constructor and destructor plans or destroys FFTW plans under one lock:
 * FFTW's planner is not thread-safe, plan execution is.
 */
#include <gnuradio/rfdetect/stft_rows.h>

#include <dlfcn.h>
#include <fftw3.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <sstream>
#include <stdexcept>

/* An AVX2+FMA copy of the hot loops next to the baseline one, picked at load time by
 * the CPU (GCC function multiversioning); elsewhere (aarch64: NEON is baseline) -O3
 * vectorises them as they are. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define RFD_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define RFD_CLONES
#endif

namespace gr {
namespace rfdetect {

namespace {

constexpr int FLOOR_RANK = 8; /* 25th percentile of 32 groups: index 32*25/100 */

std::mutex& planner_lock()
{
    static std::mutex m;
    return m;
}

/* FFTW's planner keeps its thread count as process-wide state, and GNU Radio's FFT blocks
 * set it (an fft_vcc with nthreads=2 leaves it at 2). A row plan made after one split each
 * 4096-point FFT over threads: the STFT Tile fell from about 120 to 16 MS/s in bench/stft.py
 * when it ran after the nthreads=2 chain, and the plan is another algorithm, so its bits
 * could differ. Rows are always planned single-threaded; the caller's count is restored
 * where FFTW can say what it was (fftwf_planner_nthreads, FFTW >= 3.3.9; before that the
 * count is left at 1: GNU Radio sets its own before each of its plans). The threads
 * library is looked up only if something already loaded it (RTLD_NOLOAD): without one,
 * FFTW plans single-threaded anyway. GNU Radio plans under its own mutex, not this one:
 * a GNU Radio FFT planned on another thread at the same moment could see the count
 * change, as FFTW's planner was never safe to share across threads. */
class single_threaded_planning
{
public:
    single_threaded_planning()
    {
        // pthreads and OpenMP builds, and builds with the threads in the main library
        for (const char* name :
             { "libfftw3f_threads.so.3", "libfftw3f_omp.so.3", "libfftw3f.so.3" }) {
            void* lib = dlopen(name, RTLD_LAZY | RTLD_NOLOAD);
            if (!lib)
                continue;
            d_set = (void (*)(int))dlsym(lib, "fftwf_plan_with_nthreads");
            d_get = (int (*)())dlsym(lib, "fftwf_planner_nthreads");
            dlclose(lib); // still loaded: whoever loaded it holds it
            if (d_set)
                break;
        }
        if (!d_set)
            return;
        d_saved = d_get ? d_get() : 1;
        if (d_saved != 1 || !d_get)
            d_set(1);
    }
    ~single_threaded_planning()
    {
        if (d_set && d_get && d_saved != 1)
            d_set(d_saved);
    }
    single_threaded_planning(const single_threaded_planning&) = delete;
    single_threaded_planning& operator=(const single_threaded_planning&) = delete;

private:
    void (*d_set)(int) = nullptr;
    int (*d_get)() = nullptr;
    int d_saved = 1;
};

/* log10 of a positive normal float. x = 2^e * m with m in [sqrt(1/2), sqrt(2))
 * (subtracting the bits of sqrt(1/2) splits it that way without a branch), and
 * ln m = 2 atanh(t), t = (m-1)/(m+1), |t| < 0.172, by its series to t^9 (the next
 * term is below 4e-10). Plain float arithmetic, so the loops calling it vectorise:
 * glibc's log10f is one call per value and was a third of a row's time. */
inline float log10_pos(float x)
{
    uint32_t i;
    std::memcpy(&i, &x, sizeof i);
    int32_t e = (int32_t)(i - 0x3f3504f3u) >> 23;
    i -= (uint32_t)e << 23;
    float m;
    std::memcpy(&m, &i, sizeof m);
    float t = (m - 1.0f) / (m + 1.0f);
    float t2 = t * t;
    float p = 1.0f / 9.0f;
    p = p * t2 + 1.0f / 7.0f;
    p = p * t2 + 0.2f;
    p = p * t2 + 1.0f / 3.0f;
    p = p * t2 + 1.0f;
    return (float)e * 0.30102999566f + t * p * 0.86858896381f; /* log10(2), 2/ln(10) */
}

RFD_CLONES void window_frame(float* __restrict__ dst,
                             const float* __restrict__ src,
                             const float* __restrict__ w,
                             int n)
{
    for (int i = 0; i < n; i++) {
        dst[2 * i] = src[2 * i] * w[i];
        dst[2 * i + 1] = src[2 * i + 1] * w[i];
    }
}

/* Pooled power of one spectrum; pool is a constant where this is inlined from
 * pool_power, so the inner loop unrolls and the compiler vectorises across columns
 * (twice the speed of the generic loop for pool 4). 1e-30 keeps log10 finite for an
 * all-zero frame, as in rows_from_spectrum. */
inline __attribute__((always_inline)) void pool_power_k(float* __restrict__ power,
                                                        const float* __restrict__ ri,
                                                        int width,
                                                        const int pool,
                                                        int pooling_max,
                                                        float bin_scale)
{
    if (pooling_max) {
        for (int c = 0; c < width; c++) {
            const float* b = ri + (size_t)c * 2 * pool;
            float best = 0.f;
            for (int j = 0; j < pool; j++) {
                float v = b[2 * j] * b[2 * j] + b[2 * j + 1] * b[2 * j + 1];
                best = v > best ? v : best;
            }
            float v = best * bin_scale;
            power[c] = v > 1e-30f ? v : 1e-30f;
        }
    } else {
        const float scale = bin_scale / (float)pool;
        for (int c = 0; c < width; c++) {
            const float* b = ri + (size_t)c * 2 * pool;
            float acc = 0.f;
            for (int j = 0; j < pool; j++)
                acc += b[2 * j] * b[2 * j] + b[2 * j + 1] * b[2 * j + 1];
            float v = acc * scale;
            power[c] = v > 1e-30f ? v : 1e-30f;
        }
    }
}

RFD_CLONES void pool_power(float* __restrict__ power,
                           const float* __restrict__ ri,
                           int width,
                           int pool,
                           int pooling_max,
                           float bin_scale)
{
    switch (pool) {
    case 1:
        pool_power_k(power, ri, width, 1, pooling_max, bin_scale);
        break;
    case 2:
        pool_power_k(power, ri, width, 2, pooling_max, bin_scale);
        break;
    case 4:
        pool_power_k(power, ri, width, 4, pooling_max, bin_scale);
        break;
    case 8:
        pool_power_k(power, ri, width, 8, pooling_max, bin_scale);
        break;
    default:
        pool_power_k(power, ri, width, pool, pooling_max, bin_scale);
    }
}

RFD_CLONES void log_rows(float* __restrict__ out,
                         const float* __restrict__ power,
                         int width,
                         float gain,
                         float offset,
                         int clip)
{
    if (clip) {
        for (int c = 0; c < width; c++) {
            float v = log10_pos(power[c]) * gain - offset;
            v = v > 0.f ? v : 0.f;
            out[c] = v < 1.f ? v : 1.f;
        }
    } else {
        for (int c = 0; c < width; c++)
            out[c] = log10_pos(power[c]) * gain;
    }
}

/* the mean power of 32 equal column groups, sorted: [FLOOR_RANK] is the row's noise
 * floor (25th percentile), [0] its quietest group (for running_floor) */
void sorted_groups(const float* power, int width, float* g)
{
    const int gw = width / STFT_FLOOR_GROUPS;
    for (int i = 0; i < STFT_FLOOR_GROUPS; i++) {
        float acc = 0.f;
        for (int j = 0; j < gw; j++)
            acc += power[i * gw + j];
        g[i] = acc / (float)gw;
    }
    for (int i = 1; i < STFT_FLOOR_GROUPS; i++) { /* insertion sort: 32 values */
        float v = g[i];
        int j = i - 1;
        for (; j >= 0 && g[j] > v; j--)
            g[j + 1] = g[j];
        g[j + 1] = v;
    }
}

float noise_floor(const float* power, int width)
{
    float g[STFT_FLOOR_GROUPS];
    sorted_groups(power, width, g);
    return g[FLOOR_RANK];
}

} // namespace

stft_rows::stft_rows(int fft_size,
                     int width,
                     bool pooling_max,
                     bool floor_norm,
                     float db_low,
                     float db_high,
                     float bin_scale,
                     const float* shifted_window)
    : d_fft_size(fft_size),
      d_width(width),
      d_pool(1),
      d_pooling_max(pooling_max),
      d_floor_norm(floor_norm),
      d_db_low(db_low),
      d_db_high(db_high),
      d_bin_scale(bin_scale),
      d_window(nullptr),
      d_frame(nullptr),
      d_spec(nullptr),
      d_power(nullptr),
      d_plan(nullptr)
{
    if (fft_size <= 0 || width <= 0 || fft_size % width || width % STFT_FLOOR_GROUPS) {
        std::ostringstream msg;
        msg << "stft_rows: fft_size=" << fft_size << " and width=" << width
            << " do not fit (width must divide fft_size and be a multiple of "
            << STFT_FLOOR_GROUPS << ")";
        throw std::invalid_argument(msg.str());
    }
    if (!shifted_window)
        throw std::invalid_argument("stft_rows: no window");
    d_pool = fft_size / width;
    d_window = (float*)fftwf_malloc(sizeof(float) * (size_t)fft_size);
    d_frame = fftwf_malloc(sizeof(fftwf_complex) * (size_t)fft_size);
    d_spec = fftwf_malloc(sizeof(fftwf_complex) * (size_t)fft_size);
    d_power = (float*)fftwf_malloc(sizeof(float) * (size_t)width);
    if (!d_window || !d_frame || !d_spec || !d_power) {
        release();
        throw std::runtime_error("stft_rows: out of memory");
    }
    std::memcpy(d_window, shifted_window, sizeof(float) * (size_t)fft_size);
    /* ESTIMATE: deterministic (MEASURE times candidate algorithms, so the last bits of
     * rows would change with the machine's load); out-of-place: in place, FFTW's
     * estimated plan adds a copy of the frame. */
    {
        std::lock_guard<std::mutex> lock(planner_lock());
        single_threaded_planning one_thread;
        d_plan = fftwf_plan_dft_1d(fft_size,
                                   (fftwf_complex*)d_frame,
                                   (fftwf_complex*)d_spec,
                                   FFTW_FORWARD,
                                   FFTW_ESTIMATE | FFTW_DESTROY_INPUT);
    }
    if (!d_plan) {
        release();
        throw std::runtime_error("stft_rows: FFTW cannot plan fft_size=" +
                                 std::to_string(fft_size));
    }
}

stft_rows::~stft_rows() { release(); }

void stft_rows::release()
{
    if (d_plan) {
        std::lock_guard<std::mutex> lock(planner_lock());
        fftwf_destroy_plan((fftwf_plan)d_plan);
        d_plan = nullptr;
    }
    fftwf_free(d_window);
    fftwf_free(d_frame);
    fftwf_free(d_spec);
    fftwf_free(d_power);
    d_window = nullptr;
    d_frame = d_spec = nullptr;
    d_power = nullptr;
}

void stft_rows::rows(const std::complex<float>* xc, long n_rows, long hop, float* out, float* floors)
{
    const float* x = reinterpret_cast<const float*>(xc);
    const float span = d_db_high - d_db_low;
    const long fresh = hop < d_fft_size ? d_fft_size - hop : 0; /* next frame's new part */
    for (long r = 0; r < n_rows; r++) {
        float* row = out + (size_t)r * d_width;
        window_frame((float*)d_frame, x + 2 * (size_t)r * hop, d_window, d_fft_size);
        /* The next frame's new samples were just written by the block upstream, on the
         * other core: ask for them now so that they arrive during this FFT (the window
         * pass stalled on them: a fifth of the row's time in a flowgraph). */
        if (r + 1 < n_rows) {
            const char* p = (const char*)(x + 2 * ((size_t)(r + 1) * hop + fresh));
            const char* end = (const char*)(x + 2 * ((size_t)(r + 1) * hop + d_fft_size));
            for (; p < end; p += 64)
                __builtin_prefetch(p, 0, 3);
        }
        fftwf_execute((fftwf_plan)d_plan);
        pool_power(
            d_power, (const float*)d_spec, d_width, d_pool, d_pooling_max, d_bin_scale);
        if (d_floor_norm) {
            float offset = (10.f * log10_pos(noise_floor(d_power, d_width)) + d_db_low) / span;
            log_rows(row, d_power, d_width, 10.f / span, offset, 1);
        } else {
            log_rows(row, d_power, d_width, 10.f, 0.f, 0);
            if (floors) {
                float g[STFT_FLOOR_GROUPS];
                sorted_groups(d_power, d_width, g);
                floors[2 * r] = 10.f * log10_pos(g[FLOOR_RANK]);
                floors[2 * r + 1] = 10.f * log10_pos(g[0]);
            }
        }
    }
}

long stft_rows::rows_shared(const std::complex<float>* x,
                            long n_rows,
                            long hop,
                            float* out,
                            std::atomic<long>& next,
                            long chunk,
                            float* floors)
{
    if (chunk < 1)
        chunk = 1;
    if (chunk > n_rows) // the counter cannot overflow
        chunk = n_rows > 0 ? n_rows : 1;
    long made = 0;
    for (;;) {
        long a = next.fetch_add(chunk, std::memory_order_relaxed);
        if (a >= n_rows)
            return made;
        long b = a + chunk < n_rows ? a + chunk : n_rows;
        rows(x + (size_t)a * hop, b - a, hop, out + (size_t)a * d_width, floors ? floors + 2 * a : nullptr);
        made += b - a;
    }
}

running_floor::running_floor(int width, float db_low, float db_high)
    : d_width(width), d_db_low(db_low), d_db_high(db_high), d_spread(STFT_RUNNING_FLOOR_ROWS)
{
    if (width <= 0 || !(db_high > db_low))
        throw std::invalid_argument("running_floor: width=" + std::to_string(width) +
                                    " and db_low < db_high needed");
    d_sorted.reserve(STFT_RUNNING_FLOOR_ROWS);
}

void running_floor::normalise(float* rows, const float* floors, long n_rows)
{
    const float span = d_db_high - d_db_low;
    for (long r = 0; r < n_rows; r++) {
        const float f = floors[2 * r], lowest = floors[2 * r + 1];
        const float spread_now = f - lowest;
        // a silent row says nothing of the spread; the window is kept sorted (one value
        // out, one in: a sort per row cost the block a third of its speed)
        if (lowest > STFT_RUNNING_FLOOR_SILENT_DB && std::isfinite(spread_now)) {
            float& slot = d_spread[d_seen % STFT_RUNNING_FLOOR_ROWS];
            if (d_seen >= STFT_RUNNING_FLOOR_ROWS)
                d_sorted.erase(std::lower_bound(d_sorted.begin(), d_sorted.end(), slot));
            slot = spread_now;
            d_sorted.insert(std::upper_bound(d_sorted.begin(), d_sorted.end(), spread_now), spread_now);
            d_seen++;
        }
        float offset = f + d_db_low; // nothing tracked yet: the row's own floor
        const long n = (long)d_sorted.size();
        if (n > 0) {
            const float lo = d_sorted[(n - 1) * STFT_RUNNING_FLOOR_QUANTILE / 100];
            const long within = std::upper_bound(d_sorted.begin(), d_sorted.end(),
                                                 lo + STFT_RUNNING_FLOOR_BAND_DB) - d_sorted.begin();
            const float spread = d_sorted[(within - 1) / 2];
            offset = std::min(f, lowest + spread + STFT_RUNNING_FLOOR_BAND_DB) + d_db_low;
        }
        float* row = rows + (size_t)r * d_width;
        for (int c = 0; c < d_width; c++) {
            const float level = (row[c] - offset) / span;
            row[c] = level > 0.f ? (level < 1.f ? level : 1.f) : 0.f;
        }
    }
}

std::vector<float> stft_window(const std::string& name, int n)
{
    if (n < 1)
        throw std::invalid_argument("stft_window: n=" + std::to_string(n));
    std::vector<double> a;
    if (name == "hann")
        a = { 0.5, 0.5 };
    else if (name == "hamming")
        a = { 0.54, 0.46 };
    else if (name == "blackman")
        a = { 0.42, 0.50, 0.08 };
    else if (name == "blackmanharris")
        a = { 0.35875, 0.48829, 0.14128, 0.01168 };
    else if (name == "boxcar")
        return std::vector<float>(n, 1.0f);
    else
        throw std::invalid_argument("window='" + name +
                                    "' is not one of hann, hamming, blackman, "
                                    "blackmanharris, boxcar");
    /* scipy.signal.general_cosine on n+1 points from -pi to pi, the last one dropped
     * (fftbins=True: periodic) */
    std::vector<float> w(n);
    const double step = 2.0 * M_PI / n;
    for (int i = 0; i < n; i++) {
        const double fac = -M_PI + i * step;
        double v = 0.0;
        for (size_t k = 0; k < a.size(); k++)
            v += a[k] * std::cos(k * fac);
        w[i] = (float)v;
    }
    return w;
}

std::string stft_param_problems(int fft_size,
                                int hop,
                                const std::string& window,
                                int width,
                                const std::string& pooling,
                                const std::string& normalisation,
                                float db_low,
                                float db_high)
{
    std::ostringstream p;
    auto sep = [&p]() {
        if (p.tellp() > 0)
            p << "; ";
    };
    if (fft_size < 16 || (fft_size & (fft_size - 1))) {
        sep();
        p << "fft_size=" << fft_size << " must be a power of two >= 16";
    }
    if (hop < 1 || hop > fft_size) {
        sep();
        p << "hop=" << hop << " must be between 1 and fft_size=" << fft_size;
    }
    if (window != "hann" && window != "hamming" && window != "blackman" &&
        window != "blackmanharris" && window != "boxcar") {
        sep();
        p << "window='" << window
          << "' is not one of ('hann', 'hamming', 'blackman', 'blackmanharris', 'boxcar')";
    }
    if (width < STFT_FLOOR_GROUPS || width > fft_size || (fft_size > 0 && fft_size % width)) {
        sep();
        p << "width=" << width << " must divide fft_size=" << fft_size << " and be >= "
          << STFT_FLOOR_GROUPS;
    } else if (width % STFT_FLOOR_GROUPS) {
        sep();
        p << "width=" << width << " must be a multiple of " << STFT_FLOOR_GROUPS;
    }
    if (pooling != "mean" && pooling != "max") {
        sep();
        p << "pooling='" << pooling << "' is not one of ('mean', 'max')";
    }
    if (normalisation != "floor" && normalisation != "running_floor" && normalisation != "none") {
        sep();
        p << "normalisation='" << normalisation
          << "' is not one of ('floor', 'running_floor', 'none')";
    }
    if (!(db_high > db_low)) {
        sep();
        p << "db_high=" << db_high << " must exceed db_low=" << db_low;
    }
    return p.str();
}

} // namespace rfdetect
} // namespace gr
