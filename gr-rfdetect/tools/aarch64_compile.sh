#!/bin/bash
# Compiles the row kernel, the C++ STFT Tile, the pulse contrast and carrier power kernels and their C++ QA for aarch64 (NVIDIA
# Jetson) with Debian's cross compiler, against this machine's headers: FFTW's, GNU
# Radio's and their dependencies' (architecture-independent headers, linked folder by
# folder into OUT_DIR/include; the target's C and C++ library headers come from the
# cross toolchain, which searches its own folders before /usr/include).
#
# What it shows: the sources compile for aarch64 with the same flags (and the NEON path:
# no x86 target_clones there). What it does not: linking (no aarch64 GNU Radio here), the
# pybind11 modules (no aarch64 Python headers), running, or speed, which is not measured.
#   gr-rfdetect/tools/aarch64_compile.sh [OUT_DIR]     exit 77 (ctest: skipped) without the compiler
set -euo pipefail
CXX=${CXX_AARCH64:-aarch64-linux-gnu-g++}
if ! command -v "$CXX" >/dev/null; then
  echo "SKIP: $CXX not found (Debian: apt-get install g++-aarch64-linux-gnu)"
  exit 77
fi
here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$(mktemp -d)}
mkdir -p "$out/include"
for d in fftw3.h gnuradio pmt boost spdlog fmt volk; do
  [ -e "/usr/include/$d" ] && ln -sfn "/usr/include/$d" "$out/include/$d"
done
# GNU Radio's headers include gmpxx.h, whose gmp.h Debian keeps per architecture; without
# libgmp-dev:arm64 the amd64 one stands in (both LP64 with 64-bit limbs: the same
# declarations the block's code sees; nothing of GMP is called by it)
[ -e /usr/include/aarch64-linux-gnu/gmp.h ] || ln -sfn /usr/include/x86_64-linux-gnu/gmp.h "$out/include/gmp.h"
flags=(-std=c++17 -O3 -fPIC -fvisibility=hidden -Wall -Werror=return-type
       -I "$here/include" -I "$here/lib" -isystem "$out/include")
for src in lib/stft_rows.cc lib/stft_tile_impl.cc lib/qa_stft_rows.cc lib/pulse_contrast.cc lib/qa_pulse_contrast.cc \
           lib/carrier_power.cc lib/qa_carrier_power.cc; do
  obj="$out/$(basename "$src" .cc).o"
  # the builds' contraction rules: the row kernel's fast, the pulse and carrier kernels' off
  # (their NumPy references round each operation on their own)
  contract=-ffp-contract=fast
  case "$src" in lib/pulse_contrast.cc|lib/carrier_power.cc) contract=-ffp-contract=off ;; esac
  "$CXX" "${flags[@]}" "$contract" -c "$here/$src" -o "$obj"
  # the ELF header's e_machine (offset 18, little-endian): 183 is EM_AARCH64 (coreutils'
  # od, not file(1), which a bare machine may lack)
  machine=$(od -An -t u2 -j 18 -N 2 "$obj" | tr -d ' ')
  if [ "$machine" = 183 ]; then
    echo "ok   $src -> $(basename "$obj") (ELF machine 183: aarch64)"
  else
    echo "FAIL $src: ELF machine $machine, not 183 (aarch64)"; exit 1
  fi
done
echo "aarch64: compiled with $("$CXX" -dumpfullversion) (not linked, not run; speed not measured)"
