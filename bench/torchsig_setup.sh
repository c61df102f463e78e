#!/usr/bin/env bash
# Create the TorchSig virtual environment used by bench/torchsig_sigmf.py.
#
# TorchSig 2.x needs numpy>=2, which breaks GNU Radio's Python bindings (numpy<2), so
# it lives in its own venv, apart from the project's .venv, and only SigMF files cross
# between them. Every package is pinned to the versions this was made and checked with.
#
#   bench/torchsig_setup.sh                  # -> bench/.cache/torchsig-venv
#   PYTHON=/usr/bin/python3 bench/torchsig_setup.sh /some/other/venv
#
# Why torch 2.11.0 (the registry's CUDA build, ~5 GB installed, runs on the CPU):
# torchsig imports torchaudio, and the registry's newest torchaudio (2.11.0) is a CUDA
# build whose native library links libtorch_cuda/libc10_cuda. With the local CPU-only
# torch 2.13.0+cpu wheel, `import torchaudio` fails ("libc10_cuda.so: cannot open
# shared object file"), so torch is pinned to torchaudio's own version, 2.11.0.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${1:-$here/.cache/torchsig-venv}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    echo "creating $venv with $("$python" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
    "$python" -m venv "$venv"
fi

constraints="$venv/torchsig-constraints.txt"
cat > "$constraints" <<'EOF'
aiohappyeyeballs==2.7.1
aiohttp==3.14.5
aiosignal==1.4.0
attrs==26.1.0
cffi==2.1.1
contourpy==1.3.3
cuda-bindings==13.5.0
cuda-pathfinder==1.9.0
cuda-toolkit==13.0.2
cycler==0.12.1
filelock==4.2.11
fonttools==4.68.0
frozenlist==1.8.0
fsspec==2026.9.0
h5py==3.16.0
idna==3.20
Jinja2==3.1.6
kiwisolver==1.5.1
lightning==2.6.6
lightning-utilities==0.15.3
llvmlite==0.50.0
MarkupSafe==3.0.4
matplotlib==3.11.2
mpmath==1.3.0
multidict==7.2.1
networkx==3.6.1
numba==0.68.1
numpy==2.4.6
nvidia-cublas==13.1.0.3
nvidia-cuda-cupti==13.0.85
nvidia-cuda-nvrtc==13.0.88
nvidia-cuda-runtime==13.0.96
nvidia-cudnn-cu13==9.19.0.56
nvidia-cufft==12.0.0.61
nvidia-cufile==1.15.1.6
nvidia-curand==10.4.0.35
nvidia-cusolver==12.0.4.66
nvidia-cusparse==12.6.3.3
nvidia-cusparselt-cu13==0.8.0
nvidia-nccl-cu13==2.28.9
nvidia-nvjitlink==13.0.88
nvidia-nvshmem-cu13==3.4.5
nvidia-nvtx==13.0.85
opencv-python==5.0.0.93
packaging==26.3
pillow==13.0.0
propcache==0.5.4
pycparser==3.12
pyparsing==3.3.3
python-dateutil==4.0.0
pytorch-lightning==2.6.6
PyYAML==6.0.3
scipy==1.17.1
setuptools==81.0.0
soundfile==0.14.0
sympy==1.14.0
torch==2.11.0
torchaudio==2.11.0
torchmetrics==1.9.0
torchsig==2.2.0
tqdm==4.70.1
triton==3.6.0
typing_extensions==4.16.0
tzdata==2026.6
yarl==1.25.1
EOF

"$venv/bin/python" -m pip install -c "$constraints" torch==2.11.0 torchaudio==2.11.0 torchsig==2.2.0

"$venv/bin/python" - <<'EOF'
import numpy, torch, torchaudio, torchsig
from torchsig.datasets.datasets import TorchSigIterableDataset  # noqa: F401  (fails here if torchaudio cannot load)
want = {"torchsig": "2.2.0", "torch": "2.11.0", "torchaudio": "2.11.0", "numpy": "2.4.6"}
got = {"torchsig": torchsig.__version__, "torch": torch.__version__.split("+")[0],
       "torchaudio": torchaudio.__version__.split("+")[0], "numpy": numpy.__version__}
print("TorchSig venv:", ", ".join(f"{k} {v}" for k, v in got.items()))
bad = {k: v for k, v in got.items() if v != want[k]}
if bad:
    raise SystemExit(f"unexpected versions {bad}; wanted {want}")
EOF
echo "ready: $venv/bin/python $here/torchsig_sigmf.py --help"
