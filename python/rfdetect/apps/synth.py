"""Labelled synthetic SigMF recordings with exact annotation boxes (``rfdetect synth``).

Two generators share one band-limiting helper and one SigMF writer:

* ``classic`` (the default profile): the original five classes ``ofdm``, ``fhss``, ``rb``,
  ``chirp``, ``tone`` whose sizes scale with the sample rate and recording length. Its
  bytes are unchanged from earlier releases (the embedded model was trained on it), so it
  keeps its legacy memory use: every emission is held while the recording is written.
* realistic profiles (``ism-2g4``, ``cellular``, ``vhf-uhf``, ``mixed``): field signal
  families with physical bandwidths and timings, channel effects (multipath, fading,
  frequency offset and drift) and receiver artefacts (DC spike, LO leakage, IQ image,
  spurs, anti-alias roll-off, AGC steps, ADC clipping). Recordings are generated and
  written in blocks, so memory is bounded whatever the duration.

The conventions (what a box is, how bursts merge, what artefacts are labelled, how
bandwidths shrink at low sample rates) are written down in docs/synth.md; the tests in
tests/test_synth.py check each family's and artefact's boxes against its energy.

Why one file and not a subpackage: pyproject.toml and CMakeLists.txt install
``python/rfdetect/*.py`` only, so a ``synth/`` folder would be missing from real installs.
"""
from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np

from ..formats.sigmf_io import atomic_file, atomic_write_json, encode_samples, new_meta, sort_annotations, unix_to_iso

CLASSES = ("ofdm", "fhss", "rb", "chirp", "tone")

# ---------------------------------------------------------------- shared helpers


def _bandlimit(x: np.ndarray, fs: float, lo: float, hi: float, up: int = 0) -> np.ndarray:
    """Keep only [lo, hi] Hz of ``x`` (circularly, over its length): every box is exact by
    construction. With ``up`` > 1, ``x`` is sampled at fs/up and the result at fs (the kept
    spectrum is placed in a longer zero spectrum), so narrowband signals are made cheaply
    at a low rate. ``up=0`` (the default) is the original classic computation, bit for bit."""
    if up == 0:   # the classic path: NumPy, double precision, exactly as before
        X = np.fft.fft(x)
        f = np.fft.fftfreq(len(x), 1 / fs)
        X[(f < lo) | (f > hi)] = 0
        return np.fft.ifft(X)
    # realistic profiles: single precision (~140 dB of dynamic range, more than any ADC imitated) and SciPy's faster FFT
    from scipy import fft as sfft
    n = len(x)
    X = sfft.fft(np.asarray(x, np.complex64))
    f = np.fft.fftfreq(n, up / fs)
    keep = np.flatnonzero((f >= lo) & (f <= hi))
    Y = np.zeros(n * up, np.complex64)
    Y[np.where(f[keep] < 0, keep + n * (up - 1), keep)] = X[keep] * up
    return sfft.ifft(Y, overwrite_x=True)


def _overlaps(box, boxes, guard_t, guard_f):
    s0, s1, f0, f1 = box
    return any(s0 < b1 + guard_t and b0 < s1 + guard_t and f0 < g1 + guard_f and g0 < f1 + guard_f
               for b0, b1, g0, g1 in boxes)


def _overlaps_any(new: np.ndarray, placed: np.ndarray, guard_t: float, guard_f: float) -> np.ndarray:
    """Vectorised :func:`_overlaps` for many boxes (rows s0, s1, f0, f1): which new boxes touch a placed one."""
    if not len(new) or not len(placed):
        return np.zeros(len(new), bool)
    a, b = new[:, None, :], placed[None, :, :]
    hit = ((a[..., 0] < b[..., 1] + guard_t) & (b[..., 0] < a[..., 1] + guard_t)
           & (a[..., 2] < b[..., 3] + guard_f) & (b[..., 2] < a[..., 3] + guard_f))
    return hit.any(axis=1)


class _StreamWriter:
    """``base.sigmf-data`` written block by block into a temporary file and renamed into
    place when complete (readers never see half a recording), then the metadata atomically,
    as :func:`sigmf_io.write_recording` does for whole arrays."""

    def __init__(self, base, meta: dict):
        base = Path(str(base).removesuffix(".sigmf-meta").removesuffix(".sigmf-data"))
        base.parent.mkdir(parents=True, exist_ok=True)
        self.data_path = Path(str(base) + ".sigmf-data")
        self.meta_path = Path(str(base) + ".sigmf-meta")
        self.meta = meta

    def write(self, blocks: Iterator[np.ndarray]) -> Path:
        datatype = self.meta["global"]["core:datatype"]
        with atomic_file(self.data_path, "wb") as f:
            for blk in blocks:
                f.write(encode_samples(blk, datatype))
        meta = dict(self.meta)
        meta["annotations"] = sort_annotations(meta.get("annotations", []))
        atomic_write_json(self.meta_path, meta)
        return self.meta_path


# ---------------------------------------------------------------- classic (legacy) generator
# Kept exactly as it was: the embedded default model and the tests' expectations were made
# from these bytes. Only the noise is now drawn block by block (same numbers, same order).


@dataclass
class Emission:
    label: str
    start: int
    iq: np.ndarray  # unit power, band-limited to [f_lo, f_hi] around 0 before shifting
    f_lo: float     # Hz relative to the recording centre
    f_hi: float
    snr_db: float


def _ramp(x: np.ndarray, n: int) -> np.ndarray:
    n = min(n, len(x) // 4)
    if n > 1:
        r = 0.5 - 0.5 * np.cos(np.pi * np.arange(n) / n)
        x[:n] *= r
        x[-n:] *= r[::-1]
    return x


def _qpsk(rng, n):
    return (rng.choice([-1, 1], n) + 1j * rng.choice([-1, 1], n)) / np.sqrt(2)


def _ofdm(rng, fs, n):
    nfft = 256
    nsc = int(rng.integers(16, 97))
    cp = nfft // 8
    nsym = -(-n // (nfft + cp))
    grid = np.zeros((nsym, nfft), complex)
    ks = np.r_[-(nsc // 2):0, 1:nsc - nsc // 2 + 1]
    grid[:, ks % nfft] = _qpsk(rng, nsym * len(ks)).reshape(nsym, -1)
    sym = np.fft.ifft(grid, axis=1)
    x = np.concatenate([sym[:, -cp:], sym], axis=1).ravel()[:n]
    df = fs / nfft
    return x, (ks.min() - 0.5) * df, (ks.max() + 0.5) * df


def _gfsk(rng, fs, n, rs):
    sps = max(2, int(fs / rs))
    bits = rng.choice([-1.0, 1.0], -(-n // sps) + 4)
    up = np.repeat(bits, sps)
    t = np.arange(-2 * sps, 2 * sps + 1) / sps
    bt = 0.5
    g = np.exp(-2 * (np.pi * bt * t) ** 2 / np.log(2))
    freq = np.convolve(up, g / g.sum(), mode="same")[:n] * (0.25 * rs)  # h=0.5: deviation rs/4
    x = np.exp(2j * np.pi * np.cumsum(freq) / fs)
    half = 0.75 * rs  # deviation + Gaussian-shaped symbol spectrum, 99 % power
    return x, -half, half


def _make(rng, label, fs, dur_s):
    """-> list of (offset_samples, iq, f_lo, f_hi) pieces, relative to the emission start/centre."""
    if label == "ofdm":
        n = int(dur_s * rng.uniform(0.02, 0.06) * fs)
        x, lo, hi = _ofdm(rng, fs, n)
        return [(0, x, lo, hi)]
    if label == "fhss":
        rs = fs / 100
        hop = int(dur_s * rng.uniform(0.01, 0.02) * fs)
        pieces, t = [], 0
        chans = rng.permutation(np.arange(-6, 7))[:int(rng.integers(3, 6))]
        for c in chans:
            x, lo, hi = _gfsk(rng, fs, hop, rs)
            off = c * fs / 16
            pieces.append((t, x * np.exp(2j * np.pi * off * np.arange(hop) / fs), lo + off, hi + off))
            t += hop + int(hop * 0.3)
        return pieces
    if label == "rb":
        rbw = fs / 56
        k = int(rng.integers(2, 13))
        slot = dur_s * 0.01
        n = int(slot * int(rng.integers(2, 6)) * fs)
        x = _qpsk(rng, n)
        return [(0, x, -k * rbw / 2, k * rbw / 2)]
    if label == "chirp":
        n = int(dur_s * rng.uniform(0.02, 0.06) * fs)
        span = rng.uniform(0.05, 0.25) * fs
        f0 = -span / 2
        t = np.arange(n) / fs
        x = np.exp(2j * np.pi * (f0 * t + 0.5 * span / (n / fs) * t ** 2))
        if rng.random() < 0.5:
            x = np.conj(x)
        return [(0, x, -span / 2, span / 2)]
    if label == "tone":
        n = int(dur_s * rng.uniform(0.05, 0.12) * fs)
        bw = rng.uniform(0.02, 0.04) * fs
        x, _, _ = _gfsk(rng, fs, n, bw / 1.5)
        return [(0, x, -bw / 2, bw / 2)]
    raise ValueError(f"unknown class {label!r}; choose from {CLASSES}")


def _skip_normals(rng, n: int, chunk: int = 1 << 20) -> None:
    """Advance ``rng`` past ``n`` standard normals without holding them (same stream as one big draw)."""
    while n > 0:
        k = min(chunk, n)
        rng.standard_normal(k)
        n -= k


class _ClassicPlan:
    """The classic recording: the legacy rng stream (real noise, imaginary noise, then the
    emissions), with the noise drawn again block by block while writing."""

    def __init__(self, seed, sample_rate, duration, snr_db, n_signals, classes, center_freq):
        rng = np.random.default_rng(seed)
        fs = float(sample_rate)
        self.fs, self.n_total = fs, int(duration * fs)
        self.re_state = rng.bit_generator.state
        _skip_normals(rng, self.n_total)
        self.im_state = rng.bit_generator.state
        _skip_normals(rng, self.n_total)
        placed, anns, self.adds = [], [], []
        attempts = 0
        while len(placed) < n_signals and attempts < n_signals * 50:
            attempts += 1
            label = classes[int(rng.integers(len(classes)))]
            pieces = _make(rng, label, fs, duration)
            span_n = max(off + len(x) for off, x, _, _ in pieces)
            lo = min(p[2] for p in pieces)
            hi = max(p[3] for p in pieces)
            if span_n >= self.n_total or hi - lo >= 0.9 * fs:
                continue
            start = int(rng.integers(0, self.n_total - span_n))
            shift = rng.uniform(-0.45 * fs - lo, 0.45 * fs - hi)
            boxes = [(start + off, start + off + len(x), f0 + shift, f1 + shift) for off, x, f0, f1 in pieces]
            if any(_overlaps(b, placed, 0.004 * fs, 0.01 * fs) for b in boxes):
                continue
            snr = float(rng.uniform(*snr_db))
            for (off, x, f0, f1), b in zip(pieces, boxes):
                x = _bandlimit(x, fs, f0, f1)
                x = _ramp(x, max(8, len(x) // 50))
                x *= np.exp(2j * np.pi * shift * np.arange(len(x)) / fs)
                power = 10 ** (snr / 10) * (f1 - f0) / fs
                x *= np.sqrt(power / np.mean(np.abs(x) ** 2))
                self.adds.append((b[0], x))
                placed.append(b)
                anns.append({"core:sample_start": int(b[0]), "core:sample_count": int(b[1] - b[0]),
                             "core:freq_lower_edge": float(center_freq + b[2]),
                             "core:freq_upper_edge": float(center_freq + b[3]),
                             "core:label": label, "rfdetect:snr_db": round(snr, 2)})
        self.annotations = anns

    def blocks(self, block: int = 1 << 18) -> Iterator[np.ndarray]:
        re, im = np.random.default_rng(), np.random.default_rng()
        re.bit_generator.state, im.bit_generator.state = self.re_state, self.im_state
        for b0 in range(0, self.n_total, block):
            b1 = min(self.n_total, b0 + block)
            iq = (re.standard_normal(b1 - b0) + 1j * im.standard_normal(b1 - b0)) / np.sqrt(2)
            for s, x in self.adds:  # in placement order, as the legacy whole-array sums were
                lo, hi = max(s, b0), min(s + len(x), b1)
                if lo < hi:
                    iq[lo - b0:hi - b0] += x[lo - s:hi - s]
            yield iq.astype(np.complex64)


# ---------------------------------------------------------------- realistic generator: constants

PROFILES = ("classic", "ism-2g4", "cellular", "vhf-uhf", "mixed", "generic", "unshaped")
FIELD_FAMILIES = ("wifi", "lte_dl", "lte_ul", "ble", "bt", "zigbee", "lora", "drone_video", "drone_telemetry",
                  "nbfm", "am", "tdma", "radar", "dsss", "tone")
# families labelled with another family's name, the one a user would give them: a sweep that
# turns at each symbol and an FMCW sweep are chirps, PSK/QAM without a pulse filter is digital
LABEL_OF = {"lfm_data": "chirp", "fmcw": "chirp", "digital_rect": "digital"}
FAMILIES = FIELD_FAMILIES + ("digital",) + tuple(LABEL_OF)
ARTEFACTS = ("dc", "lo_leak", "iq_image", "spurs", "rolloff", "agc", "clipping",
             "multipath", "fading", "freq_offset", "drift", "overlap", "short_gaps")
IMAGE_LABEL = "image"

# relative weights of the families in each profile
_MIX = {
    "ism-2g4": {"wifi": 3, "ble": 3, "bt": 1, "zigbee": 2, "drone_video": 1.5, "drone_telemetry": 1.5,
                "lora": 0.5, "dsss": 1, "tone": 0.5},
    "cellular": {"lte_dl": 2, "lte_ul": 4, "dsss": 1, "tone": 0.5},
    "vhf-uhf": {"nbfm": 4, "am": 2, "tdma": 3, "lora": 1.5, "tone": 1, "radar": 0.5, "drone_telemetry": 0.5},
    # the field families only: a seed's recording stays what it was before `digital` existed
    "mixed": {f: 1 for f in FIELD_FAMILIES},
    # no standard's numbers: single-carrier bursts of any width and length, with some of the rest
    "generic": {"digital": 6, "wifi": 1, "drone_video": 0.5, "am": 1, "nbfm": 1, "lora": 0.5, "tone": 0.5,
                "dsss": 0.5},
    # no spectral mask: chirps that turn at each symbol, FMCW sweeps, PSK/QAM/ASK whose sinc
    # sidelobes rise over the noise when strong, with filtered bursts, LoRa and radar beside them
    "unshaped": {"lfm_data": 2, "fmcw": 1, "digital_rect": 3, "digital": 1, "lora": 1, "radar": 0.5,
                 "tone": 0.5},
}
# chance that each artefact is present in a recording (per emitter for the channel effects)
_ARTEFACT_P = {"dc": 0.7, "lo_leak": 0.3, "iq_image": 0.4, "spurs": 0.5, "rolloff": 0.8, "agc": 0.3,
               "clipping": 0.15, "multipath": 0.5, "fading": 0.5, "freq_offset": 0.6, "drift": 0.3,
               "overlap": 0.15, "short_gaps": 0.5}

BLOCK = 1 << 18        # samples generated and written at a time
SEG = 1 << 17          # longest piece band-limited in one FFT (output samples); longer emissions are cross-faded pieces
XF = 4096              # cross-fade between pieces of a long emission (output samples; at least 32 source samples)
MAX_FRAC = 0.85        # an emission wider than this fraction of fs is narrowed to fit (docs: bandwidth scaling)
PASSBAND = 0.45        # emissions lie within +-PASSBAND*fs: inside the anti-alias filter's flat part
IMAGE_MIN_SNR = 3.0    # an IQ image is annotated when its own SNR reaches this (dB)
TONE_BINS = 2          # a tone's box is this many bins of a 4096-point FFT wide (a carrier has no width of its own)
_TAG_NOISE, _TAG_EMITTER, _TAG_BURST, _TAG_ART = 1, 2, 3, 4   # separate random streams per (seed, index)


@dataclass
class _Ctx:
    fs: float
    n: int                # samples in the recording
    min_gap: int          # bursts of one emitter on one band closer than this share a box
    short_gaps: bool
    profile: str
    rng: np.random.Generator

    @property
    def dur(self) -> float:
        return self.n / self.fs

    def fit(self, bw: float) -> float:
        """Frequency scale for an emission of nominal width ``bw`` Hz (1 when it fits)."""
        return min(1.0, MAX_FRAC * self.fs / bw)

    def decim(self, need_rate: float) -> int:
        """Decimation (a power of two <= 1024) for a source whose content needs ``need_rate`` samples/s."""
        d = 1
        while d < 1024 and self.fs / (2 * d) >= need_rate:
            d *= 2
        return d

    def gap(self, lo: float, hi: float) -> float:
        """An inter-burst gap in seconds; with short_gaps, half of them are 2-3 spectrogram rows (min_gap)."""
        if self.short_gaps and self.rng.random() < 0.5:
            return self.rng.uniform(2.0, 3.0) * self.min_gap / self.fs
        return self.rng.uniform(lo, hi)

    def window(self, min_s: float = 0.0) -> tuple[float, float]:
        """An activity window (seconds) that overlaps the recording, possibly starting before it."""
        length = max(min_s, self.rng.uniform(0.3, 1.0) * self.dur)
        t0 = self.rng.uniform(-0.2 * length, self.dur - 0.2 * length)
        return t0, t0 + length


@dataclass
class _Burst:
    start: int            # absolute sample (may lie before the recording: clipped in the box)
    n: int
    f: float              # centre relative to the emitter's centre (hop channel), Hz
    lo: float             # occupied band relative to the burst centre, Hz
    hi: float
    D: int                # source made at fs/D
    ramp: int             # on/off ramp, output samples
    source: Callable      # (rng, fs_src, n_src_total) -> gen(n) returning the next n raw source samples
    words: Optional[list] = None   # voice: absolute sample spans with speech; a box seeing none is the carrier's
    quiet_half: float = 0.0        # half-width of the carrier alone (voice between words)


@dataclass
class _Emitter:
    label: str
    bursts: list
    hopping: bool = False         # colliding hops are dropped instead of the whole emitter
    info: dict = field(default_factory=dict)
    snr_db: float = 0.0
    fc: float = 0.0               # placement, Hz relative to the recording centre (includes CFO)
    cfo: float = 0.0
    drift: float = 0.0            # Hz/s, reference: recording start
    taps: Optional[tuple] = None  # multipath: (delays s, complex gains)
    fading: Optional[tuple] = None  # (doppler Hz, K factor, seed)
    # (snr_db) -> half-width Hz, for an emission whose visible band grows with its strength
    # (sidelobes over the noise): set on every burst once the SNR is drawn
    band_of_snr: Optional[Callable] = None


# ---------------------------------------------------------------- sources (raw baseband, unit-ish power)
# Each returns gen(n) giving the next n samples at fs_src; state (phase, symbol position)
# carries between calls, because long emissions are made piece by piece.


def _src_ofdm(df, ks, cp_frac=0.125, preamble=False, qam16=False):
    ks = np.asarray(ks)

    def make(rng, fs_src, _n):
        nfft = max(int(round(fs_src / df)), int(2 * np.abs(ks).max() + 2))
        cp = int(round(cp_frac * nfft))
        buf = [np.zeros(0, complex)]
        if preamble:  # Wi-Fi-like: short training (every 4th carrier: 4-fold periodic) then long training
            g = np.zeros(nfft, complex)
            stf_k = ks[ks % 4 == 0]
            g[stf_k % nfft] = _qpsk(rng, len(stf_k)) * np.sqrt(len(ks) / max(1, len(stf_k)))
            stf = np.tile(np.fft.ifft(g), 3)[:int(2.5 * nfft)]
            g = np.zeros(nfft, complex)
            g[ks % nfft] = rng.choice([-1.0, 1.0], len(ks))
            ltf = np.fft.ifft(g)
            buf[0] = np.concatenate([stf, ltf[-nfft // 2:], ltf, ltf])

        def gen(n):
            parts, have = [buf[0]], len(buf[0])
            while have < n:
                m = -(-(n - have) // (nfft + cp))
                grid = np.zeros((m, nfft), complex)
                sym = _qpsk(rng, m * len(ks))
                if qam16:
                    sym = (sym + _qpsk(rng, m * len(ks)) / 2) / np.sqrt(1.25)
                grid[:, ks % nfft] = sym.reshape(m, -1)
                s = np.fft.ifft(grid, axis=1)
                s = np.concatenate([s[:, nfft - cp:], s], axis=1).ravel() if cp else s.ravel()
                parts.append(s)
                have += len(s)
            x = np.concatenate(parts)
            buf[0] = x[n:]
            return x[:n]
        return gen
    return make


def _ofdm_box(fs, D, df, ks):
    """The exact band of :func:`_src_ofdm` (its carrier spacing after rounding nfft at fs/D)."""
    fs_src = fs / D
    ks = np.asarray(ks)
    nfft = max(int(round(fs_src / df)), int(2 * np.abs(ks).max() + 2))
    d = fs_src / nfft
    return (ks.min() - 0.5) * d, (ks.max() + 0.5) * d


def _fm(freq_fn):
    """Continuous-phase FM source from a per-call instantaneous frequency (Hz) generator."""
    def make(rng, fs_src, n_total):
        fgen = freq_fn(rng, fs_src, n_total)
        phase = [rng.uniform(0, 2 * np.pi)]

        def gen(n):
            ph = phase[0] + 2 * np.pi * np.cumsum(fgen(n)) / fs_src
            phase[0] = ph[-1] % (2 * np.pi)
            return np.exp(1j * ph)
        return gen
    return make


def _gfsk_freq(rs, h, bt=0.5, levels=(-1.0, 1.0)):
    """Gaussian-filtered (G)FSK frequency: symbols at rs, deviation h*rs/2 per unit level."""
    def make(rng, fs_src, _n):
        sps = fs_src / rs
        t = np.arange(-2 * sps, 2 * sps + 1) / max(sps, 1e-9)
        g = np.exp(-2 * (np.pi * bt * t) ** 2 / np.log(2))
        g /= g.sum()
        pos = [0]

        def gen(n):
            k0 = pos[0]
            idx = (np.arange(k0 - len(g), k0 + n) / sps).astype(np.int64)
            syms = rng.choice(levels, idx.max() - idx.min() + 1)
            f = np.convolve(syms[idx - idx.min()], g, mode="same")[len(g):]
            pos[0] += n
            return f * (h * rs / 2)
        return gen
    return make


def _words(rng, dur_s):
    """Speech timing within one key-up, seconds from its start: words of 80-400 ms, the first
    within 20-80 ms (people talk once keyed), pauses of 50-200 ms or 300-800 ms between them."""
    out, t = [], rng.uniform(0.02, 0.08)
    while t < dur_s:
        on = rng.uniform(0.08, 0.4)
        out.append((t, min(dur_s, t + on)))
        t += on + (rng.uniform(0.05, 0.2) if rng.random() < 0.6 else rng.uniform(0.3, 0.8))
    return out


def _audio(words, a_lo, a_hi):
    """Speech-like audio (band-limited noise, unit peak roughly) on during ``words`` (None: always)."""
    def make(rng, fs_src, n_total):
        env = np.ones(n_total) if words is None else np.zeros(n_total)
        edge = max(2, int(0.01 * fs_src))
        for t0, t1 in words or ():
            a, b = int(t0 * fs_src), min(n_total, int(t1 * fs_src))
            e = min(edge, (b - a) // 2)
            if b <= a:
                continue
            w = np.ones(b - a)
            if e:
                r = np.sin(np.pi / 2 * (np.arange(e) + 0.5) / e) ** 2
                w[:e] *= r
                w[len(w) - e:] *= r[::-1]
            env[a:b] = w
        pos = [0]

        def gen(n):
            x = rng.standard_normal(n + 64)
            X = np.fft.rfft(x)
            f = np.fft.rfftfreq(len(x), 1 / fs_src)
            X[(f < a_lo) | (f > a_hi)] = 0
            a = np.fft.irfft(X, len(x))[32:32 + n]
            a /= 3 * (np.std(a) + 1e-12)
            e = env[pos[0]:pos[0] + n]
            pos[0] += n
            return np.clip(a, -1, 1) * np.pad(e, (0, n - len(e)))
        return gen
    return make


def _src_nbfm(dev, a_hi, ctcss, words):
    def freq(rng, fs_src, n_total):
        audio = _audio(words, 300.0, a_hi)(rng, fs_src, n_total)
        pos = [0]

        def gen(n):
            t = (pos[0] + np.arange(n)) / fs_src
            pos[0] += n
            tone = 0.15 * dev * np.sin(2 * np.pi * ctcss * t) if ctcss else 0.0
            return 0.85 * dev * audio(n) + tone
        return gen
    return _fm(freq)


def _src_am(a_hi, words):
    def make(rng, fs_src, n_total):
        audio = _audio(words, 100.0, a_hi)(rng, fs_src, n_total)
        return lambda n: (1.0 + 0.8 * audio(n)).astype(complex)
    return make


def _src_chips(rc, oqpsk=False):
    """DSSS chips (QPSK, rectangular) or O-QPSK with half-sine pulses (Zigbee), continuing between calls."""
    def make(rng, fs_src, _n):
        pos = [0.0]

        def gen(n):
            t = (pos[0] + np.arange(n)) * rc / fs_src   # time in chips
            pos[0] += n
            if not oqpsk:
                k = np.floor(t).astype(np.int64)
                c = _qpsk(rng, k[-1] - k[0] + 1)
                return c[k - k[0]]
            out = np.zeros(n, complex)
            for j, (tt, comp) in enumerate(((t, 1.0), (t - 1.0, 1j))):
                p = np.floor(tt / 2).astype(np.int64)
                c = rng.choice([-1.0, 1.0], p[-1] - p[0] + 1)
                out += comp * c[p - p[0]] * np.sin(np.pi * ((tt / 2) % 1.0))
            return out
        return gen
    return make


def _src_symbols(rs, points):
    """Rectangular-pulse symbols at ``rs`` drawn from the constellation ``points``, continuing between calls."""
    points = np.asarray(points, complex)

    def make(rng, fs_src, _n):
        pos = [0]

        def gen(n):
            k = ((pos[0] + np.arange(n)) * rs / fs_src).astype(np.int64)
            pos[0] += n
            return points[rng.integers(0, len(points), k[-1] - k[0] + 1)][k - k[0]]
        return gen
    return make


def _src_sweep(bw, T, pattern):
    """Linear sweeps over [-bw/2, bw/2], one per symbol of ``T`` s, phase continuous:
    ``pattern`` "data" turns up or down at random each symbol (chirp-modulated data), "saw"
    always up (the frequency jumps back at each symbol), "triangle" alternately up and down
    (FMCW)."""
    def make(rng, fs_src, _n):
        pos, ups, phase = [0], [np.zeros(0, bool)], [rng.uniform(0, 2 * np.pi)]

        def gen(n):
            t = (pos[0] + np.arange(n)) / fs_src
            pos[0] += n
            sym = np.floor(t / T).astype(np.int64)
            if pattern == "data":   # each symbol's direction, drawn 256 at a time as they are reached
                more = -(-(sym[-1] + 1 - len(ups[0])) // 256)
                if more > 0:
                    ups[0] = np.concatenate([ups[0]] + [rng.random(256) < 0.5 for _ in range(more)])
                d = np.where(ups[0][sym], 1.0, -1.0)
            else:
                d = np.ones(n) if pattern == "saw" else np.where(sym % 2 == 0, 1.0, -1.0)
            ph = phase[0] + 2 * np.pi * np.cumsum(d * (-bw / 2 + bw * (t - sym * T) / T)) / fs_src
            phase[0] = ph[-1] % (2 * np.pi)
            return np.exp(1j * ph)
        return gen
    return make


def sidelobe_half_width(snr_db: float, rs: float, edge: float) -> float:
    """Half-width (Hz) of the band where rectangular-pulse symbols at ``rs`` show over the
    noise: their spectrum is rs sinc^2(f/rs), whose sidelobe peaks fall as (rs/(pi f))^2, so
    with the box's SNR g (power over the noise in the box, 2h wide) the last sidelobe
    reaching the noise level lies at h = 2 g rs / pi^2. At least the main lobe (+-rs, null
    to null), at most the transmitter's filter edge ``edge``."""
    g = 10 ** (snr_db / 10)
    return float(min(max(2 * g * rs / np.pi ** 2, rs), edge))


def _constellation(kind, rng):
    if kind == "psk":
        m = int(rng.choice([2, 4, 8]))
        return np.exp(2j * np.pi * np.arange(m) / m), f"{m}psk"
    if kind == "qam":
        m = int(rng.choice([4, 8]))   # 16- or 64-QAM
        g = np.arange(m) - (m - 1) / 2
        pts = (g[:, None] + 1j * g[None, :]).ravel()
        return pts / np.sqrt(np.mean(np.abs(pts) ** 2)), f"{m * m}qam"
    low = float(rng.choice([0.0, 0.3]))   # on-off keying, or ASK with a floor
    return np.array([low, 1.0], complex), "ook" if low == 0 else "ask"


def _src_lora(bw, sf, n_payload):
    """LoRa-like: 8 preamble up-chirps, 2 sync symbols, 2.25 down-chirps, payload up-chirps with cyclic shifts."""
    def make(rng, fs_src, _n):
        T, M = 2 ** sf / bw, 2 ** sf
        kinds = [(1, 0)] * 8 + [(1, int(rng.integers(M))), (1, int(rng.integers(M)))] + [(-1, 0)] * 3 \
            + [(1, int(v)) for v in rng.integers(0, M, n_payload)]
        lens = [T] * len(kinds)
        lens[12] = 0.25 * T   # the quarter down-chirp
        starts = np.concatenate([[0.0], np.cumsum(lens)])
        direction = np.array([k for k, _ in kinds] + [1])
        shift = np.array([s / M for _, s in kinds] + [0.0])
        pos = [0]

        def freq(n):
            t = (pos[0] + np.arange(n)) / fs_src
            pos[0] += n
            j = np.clip(np.searchsorted(starts, t, side="right") - 1, 0, len(kinds))
            u = (t - starts[np.minimum(j, len(kinds) - 1)]) / T
            up = ((shift[j] + u) % 1.0) * bw - bw / 2
            return np.where(direction[j] > 0, up, bw / 2 - (u % 1.0) * bw)
        return _fm(lambda *_: freq)(rng, fs_src, _n)
    return make


def _src_tone():
    """A carrier with a little phase noise (a random walk), so that it fills its narrow box."""
    def make(rng, fs_src, _n):
        phase = [rng.uniform(0, 2 * np.pi)]

        def gen(n):
            ph = phase[0] + np.cumsum(rng.standard_normal(n)) * 0.05
            phase[0] = ph[-1]
            return np.exp(1j * ph)
        return gen
    return make


def _src_pulse(lfm_bw):
    """Radar pulse: unmodulated (lfm_bw 0) or a linear FM sweep over lfm_bw."""
    def make(rng, fs_src, n_total):
        def gen(n):
            if not lfm_bw:
                return np.ones(n, complex)
            t = np.arange(n) / fs_src
            T = n_total / fs_src
            return np.exp(2j * np.pi * (-lfm_bw / 2 * t + 0.5 * lfm_bw / T * t ** 2))
        return gen
    return make


# ---------------------------------------------------------------- families
# Each takes the context and returns an _Emitter with bursts relative to its centre
# (placement picks the centre). Nominal numbers are physical (Hz, seconds); ctx.fit()
# narrows everything in Hz when the sample rate cannot hold it.


def _sec(ctx, t):
    return int(round(t * ctx.fs))


def _ramp_n(ctx, n, us=2.0):
    return int(min(max(4, us * 1e-6 * ctx.fs), max(1, n // 8)))


def _train(ctx, t0, t1, on, gap):
    """[(start, n)] bursts from t0 to t1 s: ``on()`` and ``gap()`` give seconds."""
    out, t = [], t0
    while t < t1 and len(out) < 20000:
        d = on()
        out.append((_sec(ctx, t), max(8, _sec(ctx, d))))
        t += d + gap()
    return out


def _channels(ctx, spacing, half, n_max=80):
    """Hop channel centres (relative, Hz) on a grid of ``spacing`` that fit the passband."""
    lim = PASSBAND * ctx.fs - half
    k = int(lim // spacing)
    ch = np.arange(-k, k + 1) * spacing
    if len(ch) > n_max:
        ch = ch[:n_max]
    return ch if len(ch) else np.array([0.0])


def _fam_wifi(ctx):
    rng = ctx.rng
    wide = rng.random() < 0.3
    ks = np.r_[-58:-1, 2:59] if wide else np.r_[-26:0, 1:27]
    df = 312.5e3 * ctx.fit((ks.max() - ks.min() + 1) * 312.5e3)
    D = ctx.decim(1.3 * (ks.max() - ks.min() + 1) * df)
    lo, hi = _ofdm_box(ctx.fs, D, df, ks)
    t0, t1 = ctx.window()
    bursts, t = [], t0
    while t < t1 and len(bursts) < 5000:
        d = 20e-6 + 4e-6 * int(np.exp(rng.uniform(np.log(5), np.log(700))))
        bursts.append((t, d))
        t += d
        if rng.random() < 0.7:          # ACK after SIFS (16 us): one box with the frame when SIFS < min_gap
            t += 16e-6
            bursts.append((t, 44e-6))
            t += 44e-6
        t += ctx.gap(34e-6, 34e-6 + 9e-6 * 15) if rng.random() < 0.6 else ctx.gap(0.5e-3, 8e-3)
    src = _src_ofdm(df, ks, 0.25, preamble=True, qam16=True)
    return _Emitter("wifi", [_Burst(_sec(ctx, s), max(8, _sec(ctx, d)), 0.0, lo, hi, D, _ramp_n(ctx, _sec(ctx, d), 0.5), src)
                             for s, d in bursts], info={"variant": "40MHz" if wide else "20MHz"})


def _lte_ks(n_rb, dc_null):
    half = 6 * n_rb
    return np.r_[-half:0, 1:half + 1] if dc_null else np.arange(-half, half)


def _fam_lte_dl(ctx):
    n_rb = int(ctx.rng.choice([6, 15, 25, 50, 75, 100]))
    ks = _lte_ks(n_rb, True)
    df = 15e3 * ctx.fit((12 * n_rb + 1) * 15e3)
    D = ctx.decim(1.3 * len(ks) * df)
    lo, hi = _ofdm_box(ctx.fs, D, df, ks)
    src = _src_ofdm(df, ks, 0.07)
    n = ctx.n + 2 * SEG
    return _Emitter("lte_dl", [_Burst(-SEG, n, 0.0, lo, hi, D, 64, src)], info={"n_rb": n_rb})


def _fam_lte_ul(ctx):
    """One UE: allocations of 1-25 resource blocks held for 1-8 subframes (1 ms), then moved."""
    rng = ctx.rng
    n_rb_cell = int(rng.choice([25, 50, 100]))
    s = ctx.fit(12 * n_rb_cell * 15e3)
    df, rbw = 15e3 * s, 180e3 * s
    t0, t1 = ctx.window()
    bursts, t = [], np.floor(t0 * 1e3) / 1e3
    while t < t1 and len(bursts) < 2000:
        k = int(rng.integers(1, min(25, n_rb_cell) + 1))
        first = int(rng.integers(0, n_rb_cell - k + 1))
        sub = int(rng.integers(1, 9))
        ks = np.arange(12 * k) - 6 * k
        D = ctx.decim(1.3 * 12 * k * df)
        lo, hi = _ofdm_box(ctx.fs, D, df, ks)
        centre = (first + k / 2 - n_rb_cell / 2) * rbw
        bursts.append(_Burst(_sec(ctx, t), _sec(ctx, sub * 1e-3), centre, lo, hi, D, _ramp_n(ctx, 10**9, 1.0),
                             _src_ofdm(df, ks, 0.07)))
        t += sub * 1e-3 + 1e-3 * int(rng.integers(1, 6))
    return _Emitter("lte_ul", bursts, hopping=True, info={"n_rb_cell": n_rb_cell})


def _gfsk_bursts(ctx, label, rs, h, spacing, events, info=None):
    """Hopping GFSK: ``events`` is [(t s, duration s, channel index)]; one burst per packet. The box is
    the deviation plus the Gaussian-shaped symbol spectrum, (h/2 + 0.35) * rs each side (>99 % of the power)."""
    half_k = h / 2 + 0.35
    s = ctx.fit(2 * half_k * rs)
    rs, spacing = rs * s, spacing * s
    half = half_k * rs
    ch = _channels(ctx, spacing, half)
    D = ctx.decim(max(4 * rs, 2.5 * half))
    src = _fm(_gfsk_freq(rs, h))
    bursts = [_Burst(_sec(ctx, t), max(8, _sec(ctx, d)), float(ch[c % len(ch)]), -half, half, D,
                     _ramp_n(ctx, _sec(ctx, d), 4.0), src) for t, d, c in events]
    return _Emitter(label, bursts, hopping=True, info=info or {})


def _fam_ble(ctx):
    rng = ctx.rng
    t0, t1 = ctx.window()
    ev, t = [], t0
    if rng.random() < 0.4:   # advertising: three channels in a row, then an interval
        while t < t1:
            base = int(rng.integers(0, 40))
            for j in range(3):
                d = rng.uniform(128e-6, 376e-6)
                ev.append((t, d, base + 12 * j))
                t += d + rng.uniform(150e-6, 400e-6)
            t += rng.uniform(20e-3, 100e-3)
        mode = "advertising"
    else:                    # connection: one hop per interval, master packet + reply after T_IFS 150 us
        interval, c, inc = rng.uniform(7.5e-3, 50e-3), int(rng.integers(37)), int(rng.integers(5, 17))
        while t < t1:
            d1, d2 = rng.uniform(80e-6, 328e-6), rng.uniform(80e-6, 328e-6)
            ev += [(t, d1, c), (t + d1 + 150e-6, d2, c)]
            c = (c + inc) % 37
            t += interval
        mode = "connection"
    return _gfsk_bursts(ctx, "ble", 1e6, 0.5, 2e6, ev, info={"mode": mode})


def _fam_bt(ctx):
    """Bluetooth BR: 625 us slots, a hop per packet (1, 3 or 5 slots), 1 MHz channels, h 0.32."""
    rng = ctx.rng
    t0, t1 = ctx.window()
    slots = int(rng.choice([1, 3, 5]))
    busy = rng.uniform(0.3, 1.0)
    ev, t = [], t0
    while t < t1:
        if rng.random() < busy:
            ev.append((t, {1: 366e-6, 3: 1622e-6, 5: 2870e-6}[slots], int(rng.integers(79))))
        t += 625e-6 * slots
    return _gfsk_bursts(ctx, "bt", 1e6, 0.32, 1e6, ev, info={"slots": slots})


def _fam_zigbee(ctx):
    rng = ctx.rng
    s = ctx.fit(2.4e6)
    rc, half = 2e6 * s, 1.2e6 * s
    ch = _channels(ctx, 5e6 * s, half)
    c = float(rng.choice(ch))
    D = ctx.decim(max(4 * rc, 2.5 * half))
    t0, t1 = ctx.window()
    bursts, src = [], _src_chips(rc, oqpsk=True)
    t = t0
    while t < t1 and len(bursts) < 2000:
        d = rng.uniform(0.4e-3, 4.3e-3)
        bursts.append(_Burst(_sec(ctx, t), _sec(ctx, d), c, -half, half, D, _ramp_n(ctx, _sec(ctx, d), 2.0), src))
        if rng.random() < 0.5:   # ACK after 192 us turnaround
            bursts.append(_Burst(_sec(ctx, t + d + 192e-6), _sec(ctx, 352e-6), c, -half, half, D,
                                 _ramp_n(ctx, _sec(ctx, 352e-6), 2.0), src))
            d += 192e-6 + 352e-6
        t += d + ctx.gap(2e-3, 100e-3)
    return _Emitter("zigbee", bursts)


def _fam_lora(ctx):
    rng = ctx.rng
    bw = float(rng.choice([125e3, 250e3, 500e3]))
    sf = int(rng.integers(7, 13))
    bw *= ctx.fit(bw)
    D = ctx.decim(2 * bw)
    T = 2 ** sf / bw
    bursts, t = [], rng.uniform(-0.3, 0.8) * ctx.dur
    for _ in range(int(rng.integers(1, 4))):
        n_pay = int(rng.integers(8, 40))
        d = (12.25 + n_pay) * T
        bursts.append(_Burst(_sec(ctx, t), _sec(ctx, d), 0.0, -bw / 2, bw / 2, D, _ramp_n(ctx, _sec(ctx, d), 2.0),
                             _src_lora(bw, sf, n_pay)))
        t += d + ctx.gap(5 * T, 0.5)
    return _Emitter("lora", bursts, info={"sf": sf, "bw_hz": bw})


def _fam_drone_video(ctx):
    rng = ctx.rng
    bw = float(rng.choice([10e6, 20e6, 40e6]))
    n_sc = int(0.9 * bw / 15e3) // 2 * 2
    ks = np.r_[-n_sc // 2:0, 1:n_sc // 2 + 1]
    df = 15e3 * ctx.fit((n_sc + 1) * 15e3)
    D = ctx.decim(1.3 * len(ks) * df)
    lo, hi = _ofdm_box(ctx.fs, D, df, ks)
    t0, t1 = ctx.window(min_s=0.5 * ctx.dur)
    src = _src_ofdm(df, ks, 0.07)
    frames = _train(ctx, t0, t1, lambda: rng.uniform(1e-3, 6e-3), lambda: ctx.gap(0.1e-3, 1e-3))
    return _Emitter("drone_video", [_Burst(s, n, 0.0, lo, hi, D, _ramp_n(ctx, n, 2.0), src) for s, n in frames],
                    info={"bw_hz": bw})


def _fam_drone_telemetry(ctx):
    rng = ctx.rng
    rs = float(rng.choice([100e3, 250e3, 500e3]))
    period = rng.uniform(7e-3, 20e-3)
    t0, t1 = ctx.window()
    ev, t = [], t0
    while t < t1:
        ev.append((t, rng.uniform(0.2e-3, 1.5e-3), int(rng.integers(50))))
        t += period
    return _gfsk_bursts(ctx, "drone_telemetry", rs, float(rng.choice([0.5, 1.0])), 4 * rs, ev, info={"baud": rs})


def _ptt(ctx, lo=0.5, hi=6.0):
    """Push-to-talk transmissions: [(start, n)] with carrier-off gaps of 0.3-3 s (or 2-3 rows)."""
    t0, t1 = ctx.window()
    return _train(ctx, t0, t1, lambda: ctx.rng.uniform(lo, hi), lambda: ctx.gap(0.3, 3.0))


def _voice(ctx, spans, half, quiet_half, D, make_src, always_on=False):
    """Voice bursts (one per key-up) with their word timing."""
    out = []
    for st, n in spans:
        words = None if always_on else _words(ctx.rng, n / ctx.fs)
        abs_words = None if always_on else [(st + _sec(ctx, a), st + _sec(ctx, b)) for a, b in words]
        out.append(_Burst(st, n, 0.0, -half, half, D, _sec(ctx, 5e-3), make_src(words), abs_words, quiet_half))
    return out


def _fam_nbfm(ctx):
    rng = ctx.rng
    wide = rng.random() < 0.3
    dev = 5e3 if wide else 2.5e3
    half = dev + 3e3   # Carson's rule
    s = ctx.fit(2 * half)
    D = ctx.decim(3 * half * s)
    ctcss = float(rng.choice([0.0, 67.0, 88.5, 100.0, 123.0, 151.4])) * s
    quiet = max(TONE_BINS / 2 * ctx.fs / 4096, (0.15 * dev * s + ctcss) if ctcss else 0.0)
    bursts = _voice(ctx, _ptt(ctx), half * s, quiet, D, lambda w: _src_nbfm(dev * s, 3e3 * s, ctcss, w))
    return _Emitter("nbfm", bursts, info={"deviation_hz": dev * s})


def _fam_am(ctx):
    rng = ctx.rng
    broadcast = rng.random() < 0.4
    a_hi = (4.5e3 if broadcast else 2.8e3) * ctx.fit(2 * 4.5e3)
    D = ctx.decim(3 * a_hi)
    spans = [(-SEG, ctx.n + 2 * SEG)] if broadcast else _ptt(ctx, 0.5, 4.0)
    bursts = _voice(ctx, spans, a_hi, TONE_BINS / 2 * ctx.fs / 4096, D, lambda w: _src_am(a_hi, w), broadcast)
    return _Emitter("am", bursts, info={"variant": "broadcast" if broadcast else "voice"})


def _fam_tdma(ctx):
    """DMR-like 12.5 kHz TDMA: 4FSK 4.8 kbaud, 27.5 ms bursts every 60 ms (one slot) or 30 ms (both slots)."""
    rng = ctx.rng
    s = ctx.fit(9e3)
    half, rs = 4.5e3 * s, 4800.0 * s
    D = ctx.decim(max(8 * rs, 3 * half))
    both = rng.random() < 0.4
    src = _fm(_gfsk_freq(rs, 1944 * s / (rs / 2) / 3, bt=0.6, levels=(-3.0, -1.0, 1.0, 3.0)))
    bursts = []
    for st, n in _ptt(ctx, 0.5, 4.0):
        t = st / ctx.fs
        while t < (st + n) / ctx.fs:
            bursts.append(_Burst(_sec(ctx, t), _sec(ctx, 27.5e-3), 0.0, -half, half, D, _sec(ctx, 0.5e-3), src))
            t += 30e-3 if both else 60e-3
    return _Emitter("tdma", bursts, info={"slots": 2 if both else 1})


def _fam_radar(ctx):
    rng = ctx.rng
    pw = max(rng.uniform(1e-6, 20e-6), 16 / ctx.fs)
    lfm = rng.random() < 0.5
    bw = (rng.uniform(1e6, 20e6) if lfm else 4 / pw) * ctx.fit(20e6 if lfm else 4 / pw)
    bw = min(bw, 0.6 * ctx.fs)
    pri = rng.uniform(0.1e-3, 3e-3)
    t0, t1 = ctx.window()
    dwell, scan = rng.uniform(5e-3, 50e-3), rng.uniform(50e-3, 500e-3)
    bursts, t = [], t0
    src = _src_pulse(bw if lfm else 0.0)
    while t < t1 and len(bursts) < 20000:
        end = t + dwell
        while t < min(end, t1):
            n = max(8, _sec(ctx, pw))
            bursts.append(_Burst(_sec(ctx, t), n, 0.0, -bw / 2, bw / 2, 1, max(2, n // 8), src))
            t += pri * rng.uniform(0.97, 1.03)   # stagger
        t = end + scan
    return _Emitter("radar", bursts, info={"pulse_width_s": pw, "pri_s": pri, "lfm": lfm})


def _fam_dsss(ctx):
    rng = ctx.rng
    variant = rng.choice(["80211b", "wcdma", "gnss"]) if ctx.profile == "mixed" else \
        {"ism-2g4": "80211b", "cellular": "wcdma"}.get(ctx.profile, "gnss")
    rc, alpha = {"80211b": (11e6, 0.0), "wcdma": (3.84e6, 0.22), "gnss": (1.023e6, 0.5)}[variant]
    half = rc * (1 + alpha) / 2
    s = ctx.fit(2 * half)
    rc, half = rc * s, half * s
    D = ctx.decim(max(4 * rc, 2.5 * half))
    src = _src_chips(rc)
    if variant == "80211b":
        t0, t1 = ctx.window()
        spans = _train(ctx, t0, t1, lambda: rng.uniform(0.2e-3, 2e-3), lambda: ctx.gap(0.1e-3, 5e-3))
    else:
        spans = [(-SEG, ctx.n + 2 * SEG)]
    return _Emitter("dsss", [_Burst(st, n, 0.0, -half, half, D, _ramp_n(ctx, n, 2.0), src) for st, n in spans],
                    info={"variant": str(variant), "chip_rate": rc})


def _fam_tone(ctx):
    rng = ctx.rng
    half = TONE_BINS / 2 * ctx.fs / 4096
    D = ctx.decim(4 * half)
    t0, t1 = ctx.window()
    spans = _train(ctx, t0, t1, lambda: rng.uniform(20e-3, 500e-3), lambda: ctx.gap(10e-3, 300e-3))
    return _Emitter("tone", [_Burst(st, n, 0.0, -half, half, D, _sec(ctx, 1e-3), _src_tone()) for st, n in spans])


def _fam_digital(ctx):
    """Single-carrier digital bursts of no standard (PSK, QAM, OOK/ASK, 2- or 4-FSK): the width
    (log-uniform over 0.2-35 % of the sample rate), burst lengths and gaps vary as widely as
    a second generator's do. Linear modulations fill rs (1 + rolloff); FSK the GFSK rule."""
    rng = ctx.rng
    kind = str(rng.choice(["psk", "qam", "ask", "fsk"], p=[0.35, 0.2, 0.15, 0.3]))
    bw = float(np.exp(rng.uniform(np.log(0.002), np.log(0.35)))) * ctx.fs
    if kind == "fsk":
        h, levels = float(rng.choice([0.5, 1.0, 2.0])), (1.0, 3.0)[int(rng.integers(2))]
        rs = bw / (2 * (h / 2 * levels + 0.35))
        src = _fm(_gfsk_freq(rs, h, levels=(-1.0, 1.0) if levels == 1 else (-3.0, -1.0, 1.0, 3.0)))
        variant = f"{2 if levels == 1 else 4}fsk"
    else:
        rolloff = rng.uniform(0.2, 0.6)
        rs = bw / (1 + rolloff)
        points, variant = _constellation(kind, rng)
        src = _src_symbols(rs, points)
    half = bw / 2
    D = ctx.decim(max(4 * rs, 2.5 * half))
    t0, t1 = ctx.window()
    if rng.random() < 0.65:
        longest = 0.4 * max(0.3, ctx.dur)   # 40 % of the recording, at least 0.12 s
        spans = _train(ctx, t0, t1, lambda: float(np.exp(rng.uniform(np.log(0.3e-3), np.log(longest)))),
                       lambda: ctx.gap(0.2e-3, 30e-3))
    else:
        spans = [(_sec(ctx, t0), _sec(ctx, t1 - t0))]
    return _Emitter("digital", [_Burst(st, n, 0.0, -half, half, D, _ramp_n(ctx, n, 2.0), src) for st, n in spans],
                    info={"variant": variant, "symbol_rate": rs})


def _keyed_spans(ctx, T):
    """On-times of an `unshaped` emitter with symbols of ``T`` s: keyed bursts of at least 4
    symbols and 0.3 ms (60 %), or on for its window."""
    rng = ctx.rng
    t0, t1 = ctx.window()
    if rng.random() < 0.6:
        shortest = max(0.3e-3, 4 * T)
        longest = max(0.4 * max(0.3, ctx.dur), 2 * shortest)
        return _train(ctx, t0, t1, lambda: float(np.exp(rng.uniform(np.log(shortest), np.log(longest)))),
                      lambda: ctx.gap(0.2e-3, 30e-3))
    return [(_sec(ctx, t0), _sec(ctx, t1 - t0))]


def _sweep_half_width(bw: float, T: float) -> float:
    """The band of sweeps over ``bw`` each ``T`` s long: a sweep's spectrum runs on past its
    ends by about the square root of its rate (the Fresnel spread of a chirp), strongest where
    a triangle turns and dwells; the box holds it, and the emission is cut there."""
    return bw / 2 + math.sqrt(bw / T)


def _fam_lfm_data(ctx):
    """Chirp-modulated data: each symbol a sweep over the whole band, up or down at random,
    time-bandwidth product 16-1024; the band 1-35 % of the sample rate."""
    rng = ctx.rng
    bw = float(np.exp(rng.uniform(np.log(0.01), np.log(0.35)))) * ctx.fs
    T = float(np.exp(rng.uniform(np.log(16), np.log(1024)))) / bw
    src = _src_sweep(bw, T, "data")
    half = _sweep_half_width(bw, T)
    D = ctx.decim(2 * half)
    spans = _keyed_spans(ctx, T)
    return _Emitter(LABEL_OF["lfm_data"], [_Burst(st, n, 0.0, -half, half, D, _ramp_n(ctx, n, 2.0), src)
                                           for st, n in spans],
                    info={"family": "lfm_data", "symbol_s": T, "bw_hz": bw})


def _fam_fmcw(ctx):
    """FMCW: sawtooth or triangle sweeps over 2-50 % of the sample rate, 32-4096 over the band per sweep."""
    rng = ctx.rng
    bw = float(np.exp(rng.uniform(np.log(0.02), np.log(0.5)))) * ctx.fs
    T = float(np.exp(rng.uniform(np.log(32), np.log(4096)))) / bw
    pattern = "saw" if rng.random() < 0.5 else "triangle"
    src = _src_sweep(bw, T, pattern)
    half = _sweep_half_width(bw, T)
    D = ctx.decim(2 * half)
    spans = _keyed_spans(ctx, T)
    return _Emitter(LABEL_OF["fmcw"], [_Burst(st, n, 0.0, -half, half, D, _ramp_n(ctx, n, 2.0), src)
                                       for st, n in spans],
                    info={"family": "fmcw", "sweep_s": T, "bw_hz": bw, "pattern": pattern})


def _fam_digital_rect(ctx):
    """PSK, QAM or ASK with rectangular pulses and no pulse filter, as cheap transmitters send:
    a main lobe of +-rs (0.2-20 % of the sample rate in all) and sinc^2 sidelobes out to a
    loose filter at 1.5-4 rs. The box is where the sidelobes show over the noise
    (:func:`sidelobe_half_width`), so it widens with the SNR."""
    rng = ctx.rng
    kind = str(rng.choice(["psk", "qam", "ask"], p=[0.5, 0.3, 0.2]))
    rs = float(np.exp(rng.uniform(np.log(0.001), np.log(0.1)))) * ctx.fs
    edge = min(rng.uniform(1.5, 4.0) * rs, MAX_FRAC / 2 * ctx.fs)
    points, variant = _constellation(kind, rng)
    src = _src_symbols(rs, points)
    D = ctx.decim(max(4 * rs, 2.5 * edge))
    spans = _keyed_spans(ctx, 1.0 / rs)
    em = _Emitter(LABEL_OF["digital_rect"], [_Burst(st, n, 0.0, -edge, edge, D, _ramp_n(ctx, n, 2.0), src)
                                             for st, n in spans],
                  info={"family": "digital_rect", "variant": variant, "symbol_rate": rs, "filter_edge_hz": edge})
    em.band_of_snr = lambda snr_db: sidelobe_half_width(snr_db, rs, edge)
    return em


_FAMILY_FN = {"wifi": _fam_wifi, "lte_dl": _fam_lte_dl, "lte_ul": _fam_lte_ul, "ble": _fam_ble, "bt": _fam_bt,
              "zigbee": _fam_zigbee, "lora": _fam_lora, "drone_video": _fam_drone_video,
              "drone_telemetry": _fam_drone_telemetry, "nbfm": _fam_nbfm, "am": _fam_am, "tdma": _fam_tdma,
              "radar": _fam_radar, "dsss": _fam_dsss, "tone": _fam_tone,
              "digital": _fam_digital, "lfm_data": _fam_lfm_data, "fmcw": _fam_fmcw,
              "digital_rect": _fam_digital_rect}


# ---------------------------------------------------------------- rendering one burst


class _Render:
    """Makes one burst's samples in order, a piece (<= SEG output samples) at a time, so a
    burst lasting the whole recording needs bounded memory. Pieces overlap by a cross-fade
    of complementary sin^2 windows applied to one continuous source before band-limiting,
    so each piece is exactly inside the band and the sum is the continuous signal."""

    def __init__(self, b: _Burst, em: _Emitter, fs: float, seed):
        self.b, self.em, self.fs = b, em, fs
        D = b.D
        self.n_src = -(-b.n // D)
        seg = max(SEG // D, 16)
        self.single = self.n_src <= seg
        self.xf = min(max(32, XF // D), seg // 4)
        self.hop = seg - self.xf
        self.R = int(min(max(2, b.ramp // D), self.n_src // 4))
        self.rng = np.random.default_rng(seed)
        self.gen = b.source(self.rng, fs / D, self.n_src)
        self.pos = 0
        self.raw_tail = np.zeros(0, complex)
        self.pending = np.zeros(0, np.complex64)
        self.out = np.zeros(0, np.complex64)
        self.out_start = b.start
        self.gain = None
        self.power = 10 ** (em.snr_db / 10) * (b.hi - b.lo) / fs
        self.zi = None
        if em.taps is not None:   # multipath at the source rate; delays below a source sample merge (flat fading)
            delays, gains = em.taps
            h = np.zeros(int(round(max(delays) * fs / D)) + 1, complex)
            for d, g in zip(delays, gains):
                h[int(round(d * fs / D))] += g
            self.h = h
            self.zi = np.zeros(len(h) - 1, complex)
        self.f0 = em.fc + b.f
        self.phase0 = self.rng.uniform(0, 2 * np.pi)

    @staticmethod
    def _rise(n):
        return np.sin(np.pi / 2 * (np.arange(n) + 0.5) / n) ** 2

    def _piece(self):
        D = self.b.D
        seg_len = self.n_src if self.single else min(self.hop + self.xf, self.n_src - self.pos)
        new = self.gen(seg_len - len(self.raw_tail))
        if self.zi is not None:
            from scipy.signal import lfilter
            new, self.zi = lfilter(self.h, [1.0], new, zi=self.zi)
        raw = np.concatenate([self.raw_tail, new])
        last = self.pos + seg_len >= self.n_src
        w = np.ones(seg_len)
        rise = self.R if self.pos == 0 else self.xf
        fall = self.R if last else self.xf
        rise, fall = min(rise, seg_len // 2), min(fall, seg_len // 2)
        if rise:
            w[:rise] *= self._rise(rise)
        if fall:
            w[seg_len - fall:] *= self._rise(fall)[::-1]
        # FFT over a fast length (zero-padded: a prime-length burst would take Bluestein's slow path)
        from scipy.fft import next_fast_len
        padded = np.zeros(next_fast_len(seg_len), np.complex64)
        padded[:seg_len] = raw * w
        y = _bandlimit(padded, self.fs, self.b.lo, self.b.hi, up=D)[:seg_len * D]
        if self.gain is None:  # set once from the first piece: the level stays continuous across pieces
            p = np.sum(np.abs(y) ** 2) / (D * np.sum(w ** 2))
            self.gain = math.sqrt(self.power / p) if p > 0 else 0.0
        y *= self.gain
        k = len(self.pending)
        y[:k] += self.pending
        if last:
            ready, self.pending = y, np.zeros(0, np.complex64)
        else:
            ready, self.pending = y[:self.hop * D], y[self.hop * D:]
            self.raw_tail = raw[self.hop:]
            self.pos += self.hop
        self.out = np.concatenate([self.out, ready])

    def take(self, upto: int) -> tuple[int, np.ndarray]:
        """-> (first absolute sample, samples) from where the last call stopped to min(upto, end)."""
        want = min(upto, self.b.start + self.b.n)
        while self.out_start + len(self.out) < want:
            self._piece()
        k = max(0, want - self.out_start)
        chunk, self.out = self.out[:k], self.out[k:]
        s0 = self.out_start
        self.out_start += k
        tau = (s0 - self.b.start + np.arange(k)) / self.fs
        f0 = self.f0 + self.em.drift * self.b.start / self.fs
        chunk = chunk * _rotor(f0 * tau + 0.5 * self.em.drift * tau ** 2 + self.phase0 / (2 * np.pi))
        if self.em.fading is not None:
            chunk *= _fading_gain(self.em.fading, (s0 + np.arange(k)) / self.fs)
        return s0, chunk


def _rotor(cycles: np.ndarray) -> np.ndarray:
    """exp(2j*pi*cycles) as complex64: the phase is reduced in double precision (carriers run to
    billions of cycles), the cosine and sine taken in single precision (several times faster)."""
    ph = (2 * np.pi * (cycles - np.floor(cycles))).astype(np.float32)
    out = np.empty(len(ph), np.complex64)
    out.real, out.imag = np.cos(ph), np.sin(ph)
    return out


def _fading_gain(fading, t):
    """Flat Rician/Rayleigh gain (unit mean power) of Doppler fd: a sum of 8 Doppler-shifted paths, evaluated
    every 256 samples and interpolated (it changes over milliseconds, not samples)."""
    fd, K, seed = fading
    r = np.random.default_rng(seed)
    theta, psi = r.uniform(0, 2 * np.pi, 8), r.uniform(0, 2 * np.pi, 8)
    los = r.uniform(0, 2 * np.pi)
    tc = t[::256] if len(t) > 1 else t
    tc = np.append(tc, t[-1]) if len(t) else tc
    g = np.sqrt(K / (K + 1)) * np.exp(1j * los) + np.sqrt(1 / (K + 1)) / np.sqrt(8) * \
        np.exp(1j * (2 * np.pi * fd * np.cos(theta)[None, :] * tc[:, None] + psi[None, :])).sum(axis=1)
    return np.interp(t, tc, g.real) + 1j * np.interp(t, tc, g.imag)


# ---------------------------------------------------------------- planning a recording


@dataclass
class SynthConfig:
    """Options of a realistic recording (see docs/synth.md). ``artefacts``: None draws each
    artefact with the profile's odds; a collection turns exactly those on."""
    sample_rate: float = 10e6
    duration: float = 1.0
    snr_db: tuple = (5.0, 25.0)
    n_signals: int = 12
    classes: Optional[tuple] = None
    center_freq: float = 915e6
    profile: str = "mixed"
    artefacts: Optional[tuple] = None
    overlap: Optional[float] = None      # chance an emitter may overlap others (None: 1 with the 'overlap' artefact, else 0)
    min_gap: int = 2048                  # samples; bursts closer than this (one emitter, one band) share a box
    noise: bool = True                   # False: emissions and artefacts only (tests measure box energy)
    label_lines: bool = False            # the receiver's narrow lines (DC, LO leakage, spurs) boxed as `tone`

    def check(self) -> None:
        if self.profile not in PROFILES:
            raise ValueError(f"unknown profile {self.profile!r}; choose from {', '.join(PROFILES)}")
        if not (self.sample_rate > 0 and math.isfinite(self.sample_rate)):
            raise ValueError(f"sample rate must be a positive number of samples/s, got {self.sample_rate!r}")
        if not (self.duration > 0 and math.isfinite(self.duration)):
            raise ValueError(f"duration must be positive seconds, got {self.duration!r}")
        if int(self.duration * self.sample_rate) < 1024:
            raise ValueError(f"a recording of {self.duration} s at {self.sample_rate:g} S/s has fewer than 1024 samples")
        lo, hi = self.snr_db
        if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
            raise ValueError(f"SNR range must be two numbers, min <= max, got {lo!r}..{hi!r}")
        if self.n_signals < 0:
            raise ValueError(f"number of signals must be >= 0, got {self.n_signals}")
        if self.min_gap < 1:
            raise ValueError(f"min gap must be >= 1 sample, got {self.min_gap}")
        if self.overlap is not None and not 0 <= self.overlap <= 1:
            raise ValueError(f"overlap must be a probability in [0, 1], got {self.overlap}")
        known = labels_for(self.profile)
        fams = () if self.profile == "classic" else tuple(f for f in _MIX[self.profile] if f not in known)
        bad = [c for c in (self.classes or ()) if c not in known + fams]
        if bad:
            raise ValueError(f"unknown classes {bad} for profile {self.profile}; choose from {','.join(known + fams)}")
        if self.artefacts is not None:
            if self.profile == "classic" and self.artefacts:
                raise ValueError("the classic profile has no artefacts; pick a realistic --profile")
            bad = [a for a in self.artefacts if a not in ARTEFACTS]
            if bad:
                raise ValueError(f"unknown artefacts {bad}; choose from {','.join(ARTEFACTS)}")


def labels_for(profile: str) -> tuple:
    """Signal labels a profile can produce (the classic five, or its families' labels)."""
    if profile == "classic":
        return CLASSES
    return tuple(dict.fromkeys(LABEL_OF.get(f, f) for f in FAMILIES if f in _MIX[profile]))


class _Plan:
    """Everything about one realistic recording, decided before any sample is made."""

    def __init__(self, seed: int, index: int, cfg: SynthConfig):
        cfg.check()
        self.cfg, self.seed, self.index = cfg, int(seed), int(index)
        fs = self.fs = float(cfg.sample_rate)
        self.n_total = int(cfg.duration * fs)
        rng = np.random.default_rng([self.seed, self.index])
        on = set(cfg.artefacts) if cfg.artefacts is not None else \
            {a for a in ARTEFACTS if rng.random() < _ARTEFACT_P[a]}
        self.on = on
        overlap = cfg.overlap if cfg.overlap is not None else (1.0 if "overlap" in on else 0.0)
        # --classes names labels (a label picks every family it names) or the families themselves
        mix = {f: w for f, w in _MIX[cfg.profile].items()
               if not cfg.classes or f in cfg.classes or LABEL_OF.get(f) in cfg.classes}
        fams, weights = list(mix), np.array(list(mix.values()), float)
        self.emitters: list[_Emitter] = []
        placed = np.zeros((0, 4))
        guard_t, guard_f = cfg.min_gap, fs / 1024
        for e in range(cfg.n_signals):
            erng = np.random.default_rng([self.seed, self.index, _TAG_EMITTER, e])
            fam = fams[int(erng.choice(len(fams), p=weights / weights.sum()))]
            ctx = _Ctx(fs, self.n_total, cfg.min_gap, "short_gaps" in on, cfg.profile, erng)
            em = _FAMILY_FN[fam](ctx)
            em.bursts = [b for b in em.bursts if b.start < self.n_total and b.start + b.n > 0]
            if not em.bursts:
                continue
            em.snr_db = float(erng.uniform(*cfg.snr_db))
            if em.band_of_snr is not None:
                half = em.band_of_snr(em.snr_db)
                for b in em.bursts:
                    b.lo, b.hi = -half, half
            if "freq_offset" in on and erng.random() < 0.7:
                em.cfo = float(erng.uniform(-5e-6, 5e-6) * max(cfg.center_freq, 100e6))  # +-5 ppm of the carrier
            if "drift" in on and erng.random() < 0.7:
                em.drift = float(erng.uniform(-1, 1) * 0.01 * fs / max(cfg.duration, 1e-3))  # <= 1 % of fs over the recording
            if "multipath" in on and erng.random() < 0.7:
                n_taps = int(erng.integers(2, 5))
                delays = np.sort(np.r_[0.0, erng.uniform(0.05e-6, 5e-6, n_taps - 1)])
                gains = (erng.standard_normal(n_taps) + 1j * erng.standard_normal(n_taps)) * np.exp(-np.arange(n_taps))
                em.taps = (tuple(delays), tuple(gains / np.linalg.norm(gains)))
            if "fading" in on and erng.random() < 0.7:
                em.fading = (float(erng.uniform(1, 50)), float(erng.choice([0.0, 1.0, 5.0])), int(erng.integers(2**31)))
            may_overlap = erng.random() < overlap
            lo = min(b.f + b.lo for b in em.bursts)
            hi = max(b.f + b.hi for b in em.bursts)
            swing = abs(em.drift) * cfg.duration
            lim = PASSBAND * fs
            f_lo, f_hi = -lim - lo - em.cfo + swing, lim - hi - em.cfo - swing
            if f_lo > f_hi:
                continue
            for _ in range(20):
                em.fc = float(erng.uniform(f_lo, f_hi)) + em.cfo
                boxes = np.array([self._box(em, b) for b in em.bursts])
                hit = np.zeros(len(boxes), bool) if may_overlap else _overlaps_any(boxes, placed, guard_t, guard_f)
                if not hit.any() or (em.hopping and not hit.all()):
                    break
            else:
                continue
            if hit.any():   # hopping: the hops that would collide are not sent
                em.bursts = [b for b, h in zip(em.bursts, hit) if not h]
                boxes = boxes[~hit]
            placed = np.vstack([placed, boxes])
            self.emitters.append(em)
        self._receiver(on)
        self.annotations = self._annotate()

    def _box(self, em: _Emitter, b: _Burst):
        """(s0, s1, f0, f1) of one burst: its samples and its band (Hz from the centre), drift included."""
        d0, d1 = em.drift * b.start / self.fs, em.drift * (b.start + b.n) / self.fs
        c = em.fc + b.f
        return (b.start, b.start + b.n, c + b.lo + min(d0, d1), c + b.hi + max(d0, d1))

    def _receiver(self, on):
        """Receiver artefact parameters (none of them is a signal: DC, leakage, spurs are listed, not boxed)."""
        r = np.random.default_rng([self.seed, self.index, _TAG_ART])
        fs = self.fs
        self.dc = self.lo_leak = self.image = self.agc = self.clip = self.rolloff = None
        self.spurs = []
        if "dc" in on:
            self.dc = complex(np.sqrt(10 ** (r.uniform(-30, -10) / 10)) * np.exp(1j * r.uniform(0, 2 * np.pi)))
        if "lo_leak" in on:   # the LO leaks through where the tuner put it: a few % of fs off centre
            self.lo_leak = (float(r.choice([-1, 1]) * r.uniform(0.01, 0.05) * fs), float(r.uniform(-25, -5)))
        if "iq_image" in on:
            irr = r.uniform(20, 35)
            self.image = (float(irr), complex(10 ** (-irr / 20) * np.exp(1j * r.uniform(0, 2 * np.pi))))
        if "spurs" in on:
            for _ in range(int(r.integers(1, 5))):   # clock harmonics: near k*fs/16
                f = (int(r.integers(-7, 8)) * fs / 16 + r.uniform(-0.002, 0.002) * fs)
                self.spurs.append((float(f), float(r.uniform(-30, -10))))
        if "rolloff" in on:
            from scipy.signal import firwin
            self.rolloff = firwin(63, 0.485 * fs, fs=fs, window=("kaiser", 6.0))
        if "agc" in on:
            steps = sorted(r.uniform(0.1, 0.9, int(r.integers(1, 4))) * self.n_total)
            self.agc = [(int(s), float(r.choice([-1, 1]) * r.uniform(2, 8))) for s in steps]
        peak = 1.0 + sum(10 ** (e.snr_db / 10) * max(b.hi - b.lo for b in e.bursts) / fs for e in self.emitters)
        if "clipping" in on:   # full scale a little above the average total power: peaks of strong bursts clip
            self.clip = float(np.sqrt(peak) * 10 ** (r.uniform(0, 6) / 20))
        # written samples: full scale of the ADC -> 1.0 (12 dB of headroom when nothing clips)
        agc_max = 10 ** (max(0.0, *np.cumsum([g for _, g in self.agc])) / 20) if self.agc else 1.0
        self.scale = 1.0 / self.clip if self.clip else 1.0 / (np.sqrt(peak) * 4.0 * agc_max)

    def _annotate(self) -> list[dict]:
        fs, cf, anns = self.fs, self.cfg.center_freq, []
        for i, em in enumerate(self.emitters):
            groups: dict = {}
            for b in em.bursts:
                groups.setdefault((b.f, b.lo, b.hi), []).append((self._box(em, b), b))
            for items in groups.values():
                items.sort(key=lambda it: it[0])
                merged = []
                for (s0, s1, f0, f1), b in items:
                    if merged and s0 - merged[-1][1] < self.cfg.min_gap:   # too close to be told apart: one box
                        m = merged[-1]
                        m[1], m[2], m[3] = max(m[1], s1), min(m[2], f0), max(m[3], f1)
                        m[4].append(b)
                    else:
                        merged.append([s0, s1, f0, f1, [b]])
                for s0, s1, f0, f1, bs in merged:
                    s0, s1 = max(0, s0), min(self.n_total, s1)
                    if s1 <= s0:
                        continue
                    # the band over the visible part only (drift moves it with time)
                    b, c = bs[0], em.fc + bs[0].f
                    d0, d1 = em.drift * s0 / fs, em.drift * s1 / fs
                    lo, hi = b.lo, b.hi
                    if all(b.words is not None for b in bs) and not any(
                            a < s1 and s0 < z for b in bs for a, z in b.words):
                        lo, hi = -b.quiet_half, b.quiet_half   # voice: no word in view, only the carrier
                    f0, f1 = c + lo + min(d0, d1), c + hi + max(d0, d1)
                    a = {"core:sample_start": int(s0), "core:sample_count": int(s1 - s0),
                         "core:freq_lower_edge": float(cf + f0), "core:freq_upper_edge": float(cf + f1),
                         "core:label": em.label, "rfdetect:snr_db": round(em.snr_db, 2), "rfdetect:emitter": i}
                    if em.info.get("family", em.label) != em.label:
                        a["rfdetect:family"] = em.info["family"]
                    anns.append(a)
                    if self.image is not None and em.snr_db - self.image[0] >= IMAGE_MIN_SNR:
                        anns.append({**a, "core:freq_lower_edge": float(cf - f1), "core:freq_upper_edge": float(cf - f0),
                                     "core:label": IMAGE_LABEL, "rfdetect:image_of": em.label,
                                     "rfdetect:snr_db": round(em.snr_db - self.image[0], 2)})
        if self.cfg.label_lines:
            anns += self._line_annotations()
        return anns

    def _line_annotations(self) -> list[dict]:
        """The receiver's narrow lines as `tone` boxes over the whole recording (label_lines):
        a line looks exactly like a carrier, so a detector taught to leave them alone leaves
        tones, and the carriers of NBFM and AM, alone too."""
        cf, half = self.cfg.center_freq, TONE_BINS / 2 * self.fs / 4096
        lines = ([("dc", 0.0, 10 * np.log10(abs(self.dc) ** 2))] if self.dc is not None else []) \
            + ([("lo_leak", *self.lo_leak)] if self.lo_leak else []) + [("spur", f, p) for f, p in self.spurs]
        # the power is relative to the noise power of all fs; the SNR is over the box's band
        in_band = 10 * np.log10(4096 / TONE_BINS)
        return [{"core:sample_start": 0, "core:sample_count": int(self.n_total),
                 "core:freq_lower_edge": float(cf + f - half), "core:freq_upper_edge": float(cf + f + half),
                 "core:label": "tone", "rfdetect:snr_db": round(float(p) + in_band, 2), "rfdetect:artefact": kind}
                for kind, f, p in lines]

    def global_meta(self) -> dict:
        cf = self.cfg.center_freq
        art = {}
        if self.dc is not None:
            art["dc"] = {"freq_hz": cf, "power_db": round(10 * np.log10(abs(self.dc) ** 2), 2)}
        if self.lo_leak:
            art["lo_leak"] = {"freq_hz": cf + self.lo_leak[0], "power_db": round(self.lo_leak[1], 2)}
        if self.spurs:
            art["spurs"] = [{"freq_hz": cf + f, "power_db": round(p, 2)} for f, p in self.spurs]
        if self.image:
            art["iq_image"] = {"rejection_db": round(self.image[0], 2)}
        if self.rolloff is not None:
            art["rolloff"] = {"passband_hz": PASSBAND * self.fs, "taps": len(self.rolloff)}
        if self.agc:
            art["agc_steps"] = [{"sample": s, "gain_db": round(g, 2)} for s, g in self.agc]
        if self.clip:
            art["clipping"] = {"full_scale": 1.0}
        for k in ("multipath", "fading", "freq_offset", "drift", "overlap", "short_gaps"):
            if k in self.on:
                art[k] = True
        c = self.cfg
        return {"seed": self.seed, "index": self.index, "profile": c.profile, "snr_db": list(c.snr_db),
                "classes": list(dict.fromkeys(LABEL_OF.get(x, x) for x in c.classes)) if c.classes
                else list(labels_for(c.profile)), "min_gap": c.min_gap,
                "noise_power": float(self.scale ** 2) if c.noise else 0.0,
                "artefacts": art, "emitters": [{"label": e.label, **e.info} for e in self.emitters]}

    # ---------------------------------------------------------------- samples
    def blocks(self, block: int = BLOCK) -> Iterator[np.ndarray]:
        """The recording, ``block`` samples at a time (complex64, full scale 1.0)."""
        fs, N = self.fs, self.n_total
        order = sorted(((b.start, i, j) for i, em in enumerate(self.emitters) for j, b in enumerate(em.bursts)))
        nxt, active = 0, []
        tail = None
        for k, b0 in enumerate(range(0, N, block)):
            b1 = min(N, b0 + block)
            n = b1 - b0
            if self.cfg.noise:
                r = np.random.default_rng([self.seed, self.index, _TAG_NOISE, k])
                x = r.standard_normal(2 * n, dtype=np.float32).view(np.complex64) * np.float32(np.sqrt(0.5))
            else:
                x = np.zeros(n, np.complex64)
            t = np.arange(b0, b1) / fs
            for f, p in list(self.spurs) + ([self.lo_leak] if self.lo_leak else []):
                x += np.float32(np.sqrt(10 ** (p / 10))) * _rotor(f * t)
            if self.rolloff is not None:   # anti-alias roll-off shapes the noise floor and the spurs (overlap-add)
                from scipy.signal import oaconvolve
                y = oaconvolve(x, self.rolloff.astype(np.float32))
                if tail is not None:
                    y[:len(tail)] += tail
                x, tail = y[:n], y[n:]
            while nxt < len(order) and order[nxt][0] < b1:
                _, i, j = order[nxt]
                em = self.emitters[i]
                active.append(_Render(em.bursts[j], em, fs, [self.seed, self.index, _TAG_BURST, i, j]))
                nxt += 1
            still = []
            for rd in active:
                s0, c = rd.take(b1)
                if s0 < b0:   # a burst that began before the recording
                    c, s0 = c[b0 - s0:], b0
                x[s0 - b0:s0 - b0 + len(c)] += c
                if rd.out_start < rd.b.start + rd.b.n:
                    still.append(rd)
            active = still
            if self.image is not None:   # IQ gain/phase imbalance: a weak mirror of everything
                x = x + self.image[1] * np.conj(x)
            if self.dc is not None:
                x = x + self.dc
            if self.agc:
                g = np.zeros(n)
                for s, gdb in self.agc:   # each step settles over ~64 samples, as a real loop would
                    g += gdb / (1 + np.exp(np.clip((s - np.arange(b0, b1)) / 16.0, -60, 60)))
                x = x * 10 ** (g / 20)
            if self.clip:
                x = np.clip(x.real, -self.clip, self.clip) + 1j * np.clip(x.imag, -self.clip, self.clip)
            yield (x * self.scale).astype(np.complex64)


# ---------------------------------------------------------------- public API


def _epoch(i: int) -> str:
    t0 = _dt.datetime(2026, 1, 1, tzinfo=_dt.timezone.utc).timestamp()
    return unix_to_iso(t0 + 60 * i)


def plan_recording(seed: int, index: int = 0, cfg: Optional[SynthConfig] = None):
    """The plan of one recording (annotations, artefacts and a ``blocks()`` sample iterator)."""
    cfg = cfg or SynthConfig()
    cfg.check()
    if cfg.profile == "classic":
        return _ClassicPlan(seed * 100003 + index, cfg.sample_rate, cfg.duration, tuple(cfg.snr_db), cfg.n_signals,
                            tuple(cfg.classes or CLASSES), cfg.center_freq)
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed} index={index}")
    return _Plan(seed, index, cfg)


def render(seed: int, index: int = 0, cfg: Optional[SynthConfig] = None):
    """-> (iq complex64, annotations, plan) in memory: for tests and small recordings."""
    plan = plan_recording(seed, index, cfg)
    return np.concatenate(list(plan.blocks())), plan.annotations, plan


def write_synth(base, seed: int, index: int, cfg: SynthConfig, datatype: str = "cf32_le") -> Path:
    """Write one recording as ``base.sigmf-meta``/``-data``, block by block (bounded memory)."""
    plan = plan_recording(seed, index, cfg)
    extra = {"seed": seed, "index": index, "snr_db": list(cfg.snr_db), "classes": list(cfg.classes or CLASSES)} \
        if cfg.profile == "classic" else plan.global_meta()
    meta = new_meta(cfg.sample_rate, datatype, cfg.center_freq, datetime=_epoch(index),
                    description=f"rfdetect synth seed={seed} index={index}" +
                    ("" if cfg.profile == "classic" else f" profile={cfg.profile}"),
                    extra_global={"rfdetect:synth": extra})
    meta["annotations"] = plan.annotations
    return _StreamWriter(base, meta).write(plan.blocks())


def synth_recording(seed: int, sample_rate: float = 10e6, duration: float = 1.0, snr_db=(5.0, 25.0),
                    n_signals: int = 12, classes=CLASSES, center_freq: float = 915e6, profile: str = "classic",
                    index: int = 0, **options):
    """-> (iq complex64, annotations list). Deterministic for a seed (and index).

    ``classic`` takes ``seed`` as the recording's own seed, as it always did; other
    profiles derive everything from (seed, index). ``options``: SynthConfig fields."""
    if profile == "classic":
        plan = _ClassicPlan(seed, sample_rate, duration, snr_db, n_signals, classes, center_freq)
        return np.concatenate(list(plan.blocks())) if plan.n_total else np.zeros(0, np.complex64), plan.annotations
    cfg = SynthConfig(sample_rate, duration, tuple(snr_db), n_signals,
                      None if classes is CLASSES else tuple(classes), center_freq, profile, **options)
    iq, anns, _ = render(seed, index, cfg)
    return iq, anns


def synth_dataset(out_dir, n: int = 4, seed: int = 0, sample_rate: float = 10e6, duration: float = 1.0,
                  snr_db=(5.0, 25.0), n_signals: int = 12, classes=None, center_freq: float = 915e6,
                  datatype: str = "cf32_le", progress=None, profile: str = "classic", artefacts=None,
                  overlap: Optional[float] = None, min_gap: int = 2048, label_lines: bool = False) -> list[Path]:
    """Write ``n`` recordings ``synth_{seed}_{i:04d}`` into ``out_dir``. ``classes`` None: all of
    the profile's labels. Recording i is the same whatever ``n`` is (deterministic per seed, index)."""
    if label_lines and profile == "classic":
        raise ValueError("label_lines: the classic profile has no receiver artefacts to label")
    cfg = SynthConfig(sample_rate, duration, tuple(snr_db), n_signals,
                      tuple(classes) if classes else None, center_freq, profile,
                      tuple(artefacts) if artefacts is not None else None, overlap, min_gap,
                      label_lines=label_lines)
    cfg.check()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        paths.append(write_synth(out_dir / f"synth_{seed}_{i:04d}", seed, i, cfg, datatype))
        if progress:
            progress(i + 1, n)
    return paths


__all__ = ["CLASSES", "PROFILES", "FAMILIES", "LABEL_OF", "ARTEFACTS", "IMAGE_LABEL", "Emission", "SynthConfig",
           "labels_for", "plan_recording", "render", "sidelobe_half_width", "synth_dataset", "synth_recording",
           "write_synth"]
