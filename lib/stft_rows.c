/* Spectrogram rows in one pass per frame: window -> FFT (FFTW) -> power -> pooling ->
 * log10 -> noise-floor normalisation, with the frame held in cache the whole time.
 *
 * This is the CPU fast path of rfdetect.spectrogram (see that module for the row
 * definition). rows_from_spectrum() there is the reference for the math after the
 * FFT; tests/test_spectrogram.py holds the two within KERNEL_TOLERANCE (spectrogram.py)
 * for every window, pooling and normalisation. Why C: on two cores the NumPy version spent half its time in
 * four separate passes over each batch of spectra (square, pool, log10, scale); fused
 * per frame the row costs about the FFT plus a third (docs/performance.md).
 *
 * Loaded with ctypes (python/rfdetect/compiled_rows.py): no Python API is used, so
 * neither Python.h nor a particular Python version is needed to build it.
 * Every function that plans or destroys FFTW plans takes one lock: FFTW's planner is
 * not thread-safe, plan execution is.
 */
#include <fftw3.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define FLOOR_GROUPS 32
#define FLOOR_RANK 8 /* 25th percentile of 32 groups: index 32*25/100 */

/* An AVX2+FMA copy of the hot loops next to the baseline one, picked at load time by
 * the CPU (GCC function multiversioning); elsewhere (aarch64: NEON is baseline) -O3
 * vectorises them as they are. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define RFD_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define RFD_CLONES
#endif

static pthread_mutex_t planner_lock = PTHREAD_MUTEX_INITIALIZER;

typedef struct {
    int fft_size, width, pool, pooling_max, floor_norm;
    float db_low, db_high, bin_scale;
    float *window; /* the window times (-1)^n: multiplying by it also FFT-shifts */
    fftwf_complex *frame, *spec;
    float *power;
    fftwf_plan plan;
} rfd_stft;

/* log10 of a positive normal float. x = 2^e * m with m in [sqrt(1/2), sqrt(2))
 * (subtracting the bits of sqrt(1/2) splits it that way without a branch), and
 * ln m = 2 atanh(t), t = (m-1)/(m+1), |t| < 0.172, by its series to t^9 (the next
 * term is below 4e-10). Plain float arithmetic, so the loops calling it vectorise:
 * glibc's log10f is one call per value and was a third of a row's time. */
static inline float log10_pos(float x) {
    union {
        float f;
        uint32_t i;
    } u = {x};
    int32_t e = (int32_t)(u.i - 0x3f3504f3u) >> 23;
    u.i -= (uint32_t)e << 23;
    float m = u.f;
    float t = (m - 1.0f) / (m + 1.0f);
    float t2 = t * t;
    float p = 1.0f / 9.0f;
    p = p * t2 + 1.0f / 7.0f;
    p = p * t2 + 0.2f;
    p = p * t2 + 1.0f / 3.0f;
    p = p * t2 + 1.0f;
    return (float)e * 0.30102999566f + t * p * 0.86858896381f; /* log10(2), 2/ln(10) */
}

RFD_CLONES static void window_frame(float *restrict dst, const float *restrict src,
                                    const float *restrict w, int n) {
    for (int i = 0; i < n; i++) {
        dst[2 * i] = src[2 * i] * w[i];
        dst[2 * i + 1] = src[2 * i + 1] * w[i];
    }
}

/* Pooled power of one spectrum; pool is a constant where this is inlined from
 * pool_power, so the inner loop unrolls and the compiler vectorises across columns
 * (twice the speed of the generic loop for pool 4). 1e-30 keeps log10 finite for an
 * all-zero frame, as in rows_from_spectrum. */
static inline __attribute__((always_inline)) void pool_power_k(float *restrict power,
                                                               const float *restrict ri, int width,
                                                               const int pool, int pooling_max,
                                                               float bin_scale) {
    if (pooling_max) {
        for (int c = 0; c < width; c++) {
            const float *b = ri + (size_t)c * 2 * pool;
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
            const float *b = ri + (size_t)c * 2 * pool;
            float acc = 0.f;
            for (int j = 0; j < pool; j++) acc += b[2 * j] * b[2 * j] + b[2 * j + 1] * b[2 * j + 1];
            float v = acc * scale;
            power[c] = v > 1e-30f ? v : 1e-30f;
        }
    }
}

RFD_CLONES static void pool_power(float *restrict power, const float *restrict ri, int width,
                                  int pool, int pooling_max, float bin_scale) {
    switch (pool) {
    case 1: pool_power_k(power, ri, width, 1, pooling_max, bin_scale); break;
    case 2: pool_power_k(power, ri, width, 2, pooling_max, bin_scale); break;
    case 4: pool_power_k(power, ri, width, 4, pooling_max, bin_scale); break;
    case 8: pool_power_k(power, ri, width, 8, pooling_max, bin_scale); break;
    default: pool_power_k(power, ri, width, pool, pooling_max, bin_scale);
    }
}

RFD_CLONES static void log_rows(float *restrict out, const float *restrict power, int width,
                                float gain, float offset, int clip) {
    if (clip) {
        for (int c = 0; c < width; c++) {
            float v = log10_pos(power[c]) * gain - offset;
            v = v > 0.f ? v : 0.f;
            out[c] = v < 1.f ? v : 1.f;
        }
    } else {
        for (int c = 0; c < width; c++) out[c] = log10_pos(power[c]) * gain;
    }
}

/* the 25th percentile of the mean power of 32 equal column groups */
static float noise_floor(const float *power, int width) {
    float g[FLOOR_GROUPS];
    const int gw = width / FLOOR_GROUPS;
    for (int i = 0; i < FLOOR_GROUPS; i++) {
        float acc = 0.f;
        for (int j = 0; j < gw; j++) acc += power[i * gw + j];
        g[i] = acc / (float)gw;
    }
    for (int i = 1; i < FLOOR_GROUPS; i++) { /* insertion sort: 32 values */
        float v = g[i];
        int j = i - 1;
        for (; j >= 0 && g[j] > v; j--) g[j + 1] = g[j];
        g[j + 1] = v;
    }
    return g[FLOOR_RANK];
}

void rfd_stft_destroy(rfd_stft *s) {
    if (!s) return;
    pthread_mutex_lock(&planner_lock);
    if (s->plan) fftwf_destroy_plan(s->plan);
    pthread_mutex_unlock(&planner_lock);
    fftwf_free(s->window);
    fftwf_free(s->frame);
    fftwf_free(s->spec);
    fftwf_free(s->power);
    free(s);
}

/* NULL when out of memory or when FFTW cannot plan the size */
rfd_stft *rfd_stft_create(int fft_size, int width, int pooling_max, int floor_norm, float db_low,
                          float db_high, float bin_scale, const float *shifted_window) {
    if (fft_size <= 0 || width <= 0 || fft_size % width || width % FLOOR_GROUPS) return NULL;
    rfd_stft *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->fft_size = fft_size;
    s->width = width;
    s->pool = fft_size / width;
    s->pooling_max = pooling_max;
    s->floor_norm = floor_norm;
    s->db_low = db_low;
    s->db_high = db_high;
    s->bin_scale = bin_scale;
    s->window = fftwf_malloc(sizeof(float) * (size_t)fft_size);
    s->frame = fftwf_malloc(sizeof(fftwf_complex) * (size_t)fft_size);
    s->spec = fftwf_malloc(sizeof(fftwf_complex) * (size_t)fft_size);
    s->power = fftwf_malloc(sizeof(float) * (size_t)width);
    if (!s->window || !s->frame || !s->spec || !s->power) {
        rfd_stft_destroy(s);
        return NULL;
    }
    memcpy(s->window, shifted_window, sizeof(float) * (size_t)fft_size);
    /* ESTIMATE: deterministic (MEASURE times candidate algorithms, so the last bits of
     * rows would change with the machine's load); out-of-place: in place, FFTW's
     * estimated plan adds a copy of the frame. */
    pthread_mutex_lock(&planner_lock);
    s->plan = fftwf_plan_dft_1d(fft_size, s->frame, s->spec, FFTW_FORWARD,
                                FFTW_ESTIMATE | FFTW_DESTROY_INPUT);
    pthread_mutex_unlock(&planner_lock);
    if (!s->plan) {
        rfd_stft_destroy(s);
        return NULL;
    }
    return s;
}

/* x: interleaved complex64 samples; row r uses x[r*hop .. r*hop + fft_size).
 * out: n_rows * width floats. Runs without the GIL (ctypes releases it). */
void rfd_stft_rows(rfd_stft *s, const float *x, long n_rows, long hop, float *out) {
    const float span = s->db_high - s->db_low;
    const long fresh = hop < s->fft_size ? s->fft_size - hop : 0; /* next frame's new part */
    for (long r = 0; r < n_rows; r++) {
        float *row = out + (size_t)r * s->width;
        window_frame((float *)s->frame, x + 2 * (size_t)r * hop, s->window, s->fft_size);
        /* The next frame's new samples were just written by the block upstream, on the
         * other core: ask for them now so that they arrive during this FFT (the window
         * pass stalled on them: a fifth of the row's time in a flowgraph). */
        if (r + 1 < n_rows) {
            const char *p = (const char *)(x + 2 * ((size_t)(r + 1) * hop + fresh));
            const char *end = (const char *)(x + 2 * ((size_t)(r + 1) * hop + s->fft_size));
            for (; p < end; p += 64) __builtin_prefetch(p, 0, 3);
        }
        fftwf_execute(s->plan);
        pool_power(s->power, (const float *)s->spec, s->width, s->pool, s->pooling_max, s->bin_scale);
        if (s->floor_norm) {
            float offset = (10.f * log10_pos(noise_floor(s->power, s->width)) + s->db_low) / span;
            log_rows(row, s->power, s->width, 10.f / span, offset, 1);
        } else {
            log_rows(row, s->power, s->width, 10.f, 0.f, 0);
        }
    }
}

/* Rows [0, n_rows) shared by every thread that calls this with the same counter *next
 * (zero at the start): each takes the next `chunk` rows when it comes free, so a
 * thread that the OS preempts holds up no other. Returns the rows this call made. */
long rfd_stft_rows_shared(rfd_stft *s, const float *x, long n_rows, long hop, float *out,
                          long *next, long chunk) {
    long made = 0;
    for (;;) {
        long a = __atomic_fetch_add(next, chunk, __ATOMIC_RELAXED);
        if (a >= n_rows) return made;
        long b = a + chunk < n_rows ? a + chunk : n_rows;
        rfd_stft_rows(s, x + 2 * (size_t)a * hop, b - a, hop, out + (size_t)a * s->width);
        made += b - a;
    }
}
