#!/usr/bin/env python3
"""Write TorchSig 2.x wideband captures as labelled SigMF recordings.

Held-out evaluation data from a generator this project did not write. This script
runs INSIDE the TorchSig virtual environment (bench/torchsig_setup.sh makes it); it
imports neither GNU Radio nor rfdetect, only TorchSig, NumPy and the standard library.

    bench/.cache/torchsig-venv/bin/python bench/torchsig_sigmf.py \
        --out bench/.cache/heldout/torchsig --n 16 --seed 20260101

Each recording is one ``TorchSigIterableDataset`` sample: complex white noise plus
``--num-signals-min..max`` component signals drawn from TorchSig's own signal
generators. Recording ``i`` is seeded with a seed derived from (``--seed``, ``i``),
so any one recording can be remade on its own and does not depend on ``--n``.

Files: ``<prefix>_<seed>_<i>.sigmf-data`` (cf32_le) and ``.sigmf-meta`` beside it,
each written atomically (temporary file in the same folder, fsync, rename; data
first, so a ``.sigmf-meta`` only ever sits beside complete data).

Conventions (read from TorchSig 2.2.0's source, checked on plots):

* time: a component's ``start_in_samples`` is the sample index in the capture and
  ``duration_in_samples`` its length (= ``len(component.data)``, after truncation at
  the end of the capture). TorchSig's ``start``/``stop``/``duration`` properties are
  the same numbers as fractions of ``num_iq_samples_dataset``; they are not used.
* frequency: ``center_freq`` is a signed offset in Hz from the capture centre (not
  normalised); ``lower_freq``/``upper_freq`` = ``center_freq -/+ bandwidth/2``.
  Absolute edges = ``core:frequency`` (``--center-freq``) + those offsets.
  ``bandwidth`` is re-estimated by TorchSig after generation: the span of FFT bins
  (Blackman window, ``fft_size``) where the component's max-hold spectrum exceeds
  the noise level + 3 dB, widened by half a bin, clipped to the capture's band.
* SNR: ``rfdetect:snr_db`` is measured the way rfdetect's own synth defines it, so
  recall-by-SNR means the same on both generators: the component's mean power over
  its annotated duration / (noise power x annotated bandwidth / sample rate), from
  the capture's actual noise (capture minus the inserted components).
  ``rfdetect:torchsig_snr_db`` is TorchSig's nominal value, drawn uniformly from
  [--snr-min, --snr-max] and rounded to 0.1 dB: TorchSig scales the component so
  that the peak of its time-averaged (mean of dB) spectrum, ``fft_size`` Blackman
  bins, sits that many dB above the mean noise spectrum. The two differ a lot by
  class: chirps come out far stronger than TorchSig's number says (a frame's
  energy sits in few bins, so the mean of dB is low and TorchSig scales them up),
  FSK/OOK (peaky spectra) and wide boxes (QAM/PSK boxes include the shoulders)
  far weaker.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SIGMF_VERSION = "1.2.0"
# TorchSig's default wideband-capable sample rate (TorchSigDefaults: 10 MS/s)
DEFAULT_RATE = 10e6
# one full rfdetect tile: 1024 rows of hop 2048 with fft 4096 -> 1023 * 2048 + 4096 samples
DEFAULT_NUM_IQ = 1023 * 2048 + 4096


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _iso(t: float) -> str:
    return _dt.datetime.fromtimestamp(t, tz=_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def recording_seed(seed: int, index: int) -> int:
    """The TorchSig seed of recording ``index`` of a set made with ``seed``."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, dtype=np.uint64)[0] >> 1)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--n", type=int, default=16, help="number of recordings")
    p.add_argument("--seed", type=int, default=0, help="set seed; recording i uses a seed derived from (seed, i)")
    p.add_argument("--first", type=int, default=0, help="index of the first recording (to remake part of a set)")
    p.add_argument("--sample-rate", type=float, default=DEFAULT_RATE, help="Hz (TorchSig's default is 10 MS/s)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--num-iq-samples", type=int, default=None,
                   help=f"samples per recording (default {DEFAULT_NUM_IQ}: one full rfdetect tile)")
    g.add_argument("--duration", type=float, default=None, help="seconds per recording (instead of --num-iq-samples)")
    p.add_argument("--snr-min", type=float, default=0.0, help="dB, TorchSig's definition (see the module doc)")
    p.add_argument("--snr-max", type=float, default=25.0, help="dB")
    p.add_argument("--classes", default="all",
                   help="comma-separated TorchSig generator names (e.g. qpsk,ofdm-64,lfm-radar) or family groups "
                        "(ofdm, am, fm, fsk, psk, qam, ask, lfm, msk, adsb); 'all' = every public class")
    p.add_argument("--num-signals-min", type=int, default=3)
    p.add_argument("--num-signals-max", type=int, default=6)
    p.add_argument("--bandwidth-min", type=float, default=None, help="Hz (default sample_rate/100)")
    p.add_argument("--bandwidth-max", type=float, default=None, help="Hz (default sample_rate/8)")
    p.add_argument("--duration-min-frac", type=float, default=0.05,
                   help="shortest component, as a fraction of the recording")
    p.add_argument("--duration-max-frac", type=float, default=1.0, help="longest component, fraction of the recording")
    p.add_argument("--fft-size", type=int, default=4096,
                   help="TorchSig's fft_size: used for its SNR scaling and bandwidth (box) estimate")
    p.add_argument("--cochannel-overlap", type=float, default=0.0,
                   help="probability that TorchSig accepts a component overlapping another in time and "
                        "frequency (TorchSig's own default is 0.2)")
    p.add_argument("--impairment-level", type=int, choices=(0, 1, 2), default=0,
                   help="TorchSig Impairments level applied to each component before its SNR and bandwidth are "
                        "measured (1: transmitter impairments, 2: + fading). Capture-level transforms (receiver "
                        "impairments and the ML augmentations such as time reversal and I/Q swap, which would "
                        "invalidate the labels) are never applied")
    p.add_argument("--center-freq", type=float, default=0.0, help="core:frequency of the capture, Hz")
    p.add_argument("--datetime", default="2026-01-01T00:00:00Z",
                   help="core:datetime of recording 0; recording i starts i minutes later")
    p.add_argument("--prefix", default="torchsig")
    a = p.parse_args(argv)
    if a.n < 0 or a.first < 0:
        p.error("--n and --first must not be negative")
    if a.sample_rate <= 0:
        p.error("--sample-rate must be positive")
    if a.duration is not None:
        a.num_iq_samples = int(round(a.duration * a.sample_rate))
    if a.num_iq_samples is None:
        a.num_iq_samples = DEFAULT_NUM_IQ
    if a.num_iq_samples < a.fft_size:
        p.error("the recording must hold at least --fft-size samples")
    if a.snr_min > a.snr_max:
        p.error("--snr-min must not exceed --snr-max")
    if not 1 <= a.num_signals_min <= a.num_signals_max:
        p.error("need 1 <= --num-signals-min <= --num-signals-max")
    a.bandwidth_min = a.sample_rate / 100 if a.bandwidth_min is None else a.bandwidth_min
    a.bandwidth_max = a.sample_rate / 8 if a.bandwidth_max is None else a.bandwidth_max
    if not 0 < a.bandwidth_min <= a.bandwidth_max < a.sample_rate / 2:
        p.error("need 0 < --bandwidth-min <= --bandwidth-max < sample_rate/2 (TorchSig's modulators refuse more)")
    if not 0 < a.duration_min_frac <= a.duration_max_frac <= 1:
        p.error("need 0 < --duration-min-frac <= --duration-max-frac <= 1")
    if not 0 <= a.cochannel_overlap <= 1:
        p.error("--cochannel-overlap is a probability")
    return a


def build_dataset(a):
    """A TorchSigIterableDataset configured from the arguments (nothing generated yet)."""
    from torchsig.datasets.datasets import TorchSigIterableDataset
    from torchsig.utils.defaults import TorchSigDefaults

    fs = float(a.sample_rate)
    n = int(a.num_iq_samples)
    md = TorchSigDefaults().default_dataset_metadata
    md.update(
        num_iq_samples_dataset=n,
        sample_rate=fs,
        fft_size=int(a.fft_size),
        fft_stride=int(a.fft_size),
        noise_power_db=0.0,
        num_signals_min=int(a.num_signals_min),
        num_signals_max=int(a.num_signals_max),
        snr_db_min=float(a.snr_min),
        snr_db_max=float(a.snr_max),
        cochannel_overlap_probability=float(a.cochannel_overlap),
        signal_duration_in_samples_min=max(1, int(n * a.duration_min_frac)),
        signal_duration_in_samples_max=int(n * a.duration_max_frac),
        bandwidth_min=int(a.bandwidth_min),
        bandwidth_max=int(a.bandwidth_max),
        # components may sit anywhere in the band; TorchSig filters off what would alias
        signal_center_freq_min=-fs / 2,
        signal_center_freq_max=fs / 2 - 1,
        frequency_min=-fs / 2,
        frequency_max=fs / 2 - 1,
    )
    classes = [c.strip() for c in a.classes.split(",") if c.strip()] or ["all"]
    generators = classes[0] if classes == ["all"] else classes
    component_transforms = []
    if a.impairment_level > 0:
        from torchsig.transforms.impairments import Impairments
        component_transforms = [Impairments(a.impairment_level).signal_transforms]
    return TorchSigIterableDataset(signal_generators=generators, metadata=md, seed=int(a.seed),
                                   component_transforms=component_transforms)


def annotations_for(sample, a) -> list[dict]:
    from torchsig.signals.signal_lists import CLASS_FAMILY_DICT

    import torchsig

    fs = float(a.sample_rate)
    f0 = float(a.center_freq)
    noise = sample.data.astype(np.complex128).copy()
    for c in sample.component_signals:
        s0 = int(c.start_in_samples)
        noise[s0:s0 + len(c.data)] -= c.data
    noise_power = float(np.mean(np.abs(noise) ** 2))
    anns = []
    for c in sample.component_signals:
        s0, count = int(c.start_in_samples), int(c.duration_in_samples)
        assert count == len(c.data), "TorchSig duration disagrees with the inserted data"
        lo, hi = float(c.lower_freq), float(c.upper_freq)
        p_sig = float(np.mean(np.abs(c.data.astype(np.complex128)) ** 2)) if count else 0.0
        bw = max(hi - lo, fs / a.fft_size)
        inband = 10 * np.log10(max(p_sig, 1e-30) / (noise_power * bw / fs))
        name = str(c.class_name)
        ann = {
            "core:sample_start": s0,
            "core:sample_count": count,
            "core:freq_lower_edge": f0 + lo,
            "core:freq_upper_edge": f0 + hi,
            "core:label": name,
            "core:generator": f"torchsig {torchsig.__version__}",
            "rfdetect:family": CLASS_FAMILY_DICT.get(name, name),
            "rfdetect:snr_db": round(float(inband), 2),
            "rfdetect:torchsig_snr_db": float(c.snr_db),
        }
        anns.append(ann)
    return sorted(anns, key=lambda x: (x["core:sample_start"], x["core:sample_count"], x["core:freq_lower_edge"]))


def make_meta(sample, a, index: int, rseed: int, t0: float) -> dict:
    import torch
    import torchsig

    params = {k: getattr(a, k) for k in ("seed", "sample_rate", "num_iq_samples", "snr_min", "snr_max", "classes",
                                         "num_signals_min", "num_signals_max", "bandwidth_min", "bandwidth_max",
                                         "duration_min_frac", "duration_max_frac", "fft_size", "cochannel_overlap",
                                         "impairment_level")}
    return {
        "global": {
            "core:datatype": "cf32_le",
            "core:sample_rate": float(a.sample_rate),
            "core:version": SIGMF_VERSION,
            "core:num_channels": 1,
            "core:description": f"TorchSig {torchsig.__version__} wideband capture, set seed {a.seed}, index {index}; "
                                f"held-out evaluation data: never train or tune on it",
            "core:recorder": "bench/torchsig_sigmf.py",
            "rfdetect:heldout": True,
            "rfdetect:torchsig": {
                "torchsig": torchsig.__version__, "torch": torch.__version__, "numpy": np.__version__,
                "index": index, "recording_seed": rseed, "params": params,
                "noise_power_db": 0.0,
                "snr_definition": {
                    "rfdetect:snr_db": "mean power over the annotated duration / (noise power x annotated "
                                       "bandwidth / sample rate), dB (rfdetect synth's definition)",
                    "rfdetect:torchsig_snr_db": "TorchSig's: peak of the component's time-averaged (mean of dB) "
                                                "Blackman spectrum, fft_size bins, over the mean noise spectrum, dB"},
            },
        },
        "captures": [{"core:sample_start": 0, "core:frequency": float(a.center_freq),
                      "core:datetime": _iso(t0 + 60.0 * index)}],
        "annotations": annotations_for(sample, a),
    }


def main(argv=None) -> int:
    a = parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = _dt.datetime.fromisoformat(a.datetime.replace("Z", "+00:00")).timestamp()
    ds = build_dataset(a)
    for index in range(a.first, a.first + a.n):
        rseed = recording_seed(a.seed, index)
        ds.seed(rseed)
        tic = time.time()
        sample = next(ds)
        iq = np.asarray(sample.data, dtype=np.complex64)
        if iq.shape != (a.num_iq_samples,):
            raise RuntimeError(f"TorchSig returned {iq.shape} samples, expected {a.num_iq_samples}")
        meta = make_meta(sample, a, index, rseed, t0)
        base = out / f"{a.prefix}_{a.seed}_{index:04d}"
        _atomic_write(Path(str(base) + ".sigmf-data"), iq.astype("<c8").tobytes())
        _atomic_write(Path(str(base) + ".sigmf-meta"), (json.dumps(meta, indent=2) + "\n").encode("utf-8"))
        labels = ", ".join(f"{x['core:label']}@{x['rfdetect:torchsig_snr_db']:.1f}/{x['rfdetect:snr_db']:.1f}dB"
                           for x in meta["annotations"])
        print(f"{base.name}: {len(iq)} samples, {len(meta['annotations'])} signals (class@TorchSig/in-band SNR: {labels}) "
              f"in {time.time() - tic:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
