"""Labelled synthetic SigMF recordings with exact annotation boxes.

Each emission is generated at baseband, band-limited in the frequency domain to
exactly its annotated band (so the box is tight by construction), given a short
raised-cosine ramp (real transmitters ramp; a hard edge splatters across the whole
band), scaled to its SNR and added to complex white Gaussian noise of unit power.

SNR is the emission's power over the noise power *in the emission's bandwidth*:
``P_signal = SNR * B / fs`` with unit total noise power.

Classes (bandwidths and durations scale with the sample rate and recording
length, so small test recordings get the same mix at lower resolution):

* ``ofdm``: OFDM bursts, QPSK on 16-96 subcarriers (spacing fs/256), with cyclic prefix;
* ``fhss``: frequency-hopping GFSK (fs/100 baud, BT 0.5, h 0.5), each hop annotated on its own;
* ``rb``: uplink-like allocations of 2-12 resource blocks (fs/56 wide) on a slot grid;
* ``chirp``: linear FM sweeps over 5-25 % of the band;
* ``tone``: a carrier with slow FSK, 2-4 % of fs wide (narrow enough to be tone-like
  at the pooled resolution, wide enough to have a box).
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .sigmf_io import new_meta, unix_to_iso, write_recording

CLASSES = ("ofdm", "fhss", "rb", "chirp", "tone")


@dataclass
class Emission:
    label: str
    start: int
    iq: np.ndarray  # unit power, band-limited to [f_lo, f_hi] around 0 before shifting
    f_lo: float     # Hz relative to the recording centre
    f_hi: float
    snr_db: float


def _bandlimit(x: np.ndarray, fs: float, lo: float, hi: float) -> np.ndarray:
    X = np.fft.fft(x)
    f = np.fft.fftfreq(len(x), 1 / fs)
    X[(f < lo) | (f > hi)] = 0
    return np.fft.ifft(X)


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


def _overlaps(box, boxes, guard_t, guard_f):
    s0, s1, f0, f1 = box
    return any(s0 < b1 + guard_t and b0 < s1 + guard_t and f0 < g1 + guard_f and g0 < f1 + guard_f
               for b0, b1, g0, g1 in boxes)


def synth_recording(seed: int, sample_rate: float = 10e6, duration: float = 1.0, snr_db=(5.0, 25.0),
                    n_signals: int = 12, classes=CLASSES, center_freq: float = 915e6):
    """-> (iq complex64, annotations list). Deterministic for a seed."""
    rng = np.random.default_rng(seed)
    fs = float(sample_rate)
    n_total = int(duration * fs)
    iq = (rng.standard_normal(n_total) + 1j * rng.standard_normal(n_total)) / np.sqrt(2)
    placed, anns = [], []
    attempts = 0
    while len(placed) < n_signals and attempts < n_signals * 50:
        attempts += 1
        label = classes[int(rng.integers(len(classes)))]
        pieces = _make(rng, label, fs, duration)
        span_n = max(off + len(x) for off, x, _, _ in pieces)
        lo = min(p[2] for p in pieces)
        hi = max(p[3] for p in pieces)
        if span_n >= n_total or hi - lo >= 0.9 * fs:
            continue
        start = int(rng.integers(0, n_total - span_n))
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
            iq[b[0]:b[1]] += x
            placed.append(b)
            anns.append({"core:sample_start": int(b[0]), "core:sample_count": int(b[1] - b[0]),
                         "core:freq_lower_edge": float(center_freq + b[2]),
                         "core:freq_upper_edge": float(center_freq + b[3]),
                         "core:label": label, "rfdetect:snr_db": round(snr, 2)})
    return iq.astype(np.complex64), anns


def synth_dataset(out_dir, n: int = 4, seed: int = 0, sample_rate: float = 10e6, duration: float = 1.0,
                  snr_db=(5.0, 25.0), n_signals: int = 12, classes=CLASSES, center_freq: float = 915e6,
                  datatype: str = "cf32_le", progress=None) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    t0 = _dt.datetime(2026, 1, 1, tzinfo=_dt.timezone.utc).timestamp()
    for i in range(n):
        iq, anns = synth_recording(seed * 100003 + i, sample_rate, duration, snr_db, n_signals, classes, center_freq)
        meta = new_meta(sample_rate, datatype, center_freq, datetime=unix_to_iso(t0 + 60 * i),
                        description=f"rfdetect synth seed={seed} index={i}",
                        extra_global={"rfdetect:synth": {"seed": seed, "index": i, "snr_db": list(snr_db),
                                                          "classes": list(classes)}})
        meta["annotations"] = anns
        meta_path, _ = write_recording(out_dir / f"synth_{seed}_{i:04d}", iq, meta)
        paths.append(meta_path)
        if progress:
            progress(i + 1, n)
    return paths
