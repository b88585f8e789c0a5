#!/usr/bin/env bash
# One command for the CUDA benchmark: compact + restv2_tiny, fp32 and bf16 autocast (--amp), with a
# profile of one click; JSON and the printed table go to $OUT (the device tool's folder) or ./out.
#
# The GPU machine has PyTorch but neither SimpleITK nor MONAI, and cannot download. So, once, here:
#     scripts/gpu_benchmark.sh --prepare        # both packed into .gpu_bench/ (ignored via .git/info/exclude)
# then on the GPU machine (device tool: command "scripts/gpu_benchmark.sh", carry [".gpu_bench"],
# timeout_s 300; it needs about 1-2 minutes once the machine is up).
# Image: the bundled sample CT, because the 37 MB thorax CT does not fit the 64 MiB transfer beside
# the checkout and SimpleITK. Overrides: BENCH_IMAGE, BENCH_REPEATS, BENCH_VARIANTS, BENCH_DEVICE.
set -euo pipefail
cd "$(dirname "$0")/.."
bundle=.gpu_bench

if [[ "${1:-}" == "--prepare" ]]; then  # xz: SimpleITK in 27 MiB (its 50 MiB wheel + checkout > 64 MiB)
    grep -qxF "/$bundle/" .git/info/exclude 2>/dev/null || echo "/$bundle/" >> .git/info/exclude
    tmp=$(mktemp -d)
    python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$tmp" \
        "SimpleITK==$(python -c 'import SimpleITK; print(SimpleITK.Version.VersionString())')" \
        "monai==$(python -c 'import monai; print(monai.__version__)')"
    mkdir -p "$bundle"
    python -c "import pathlib, sys, tarfile, zipfile
src = pathlib.Path(sys.argv[1])
for whl in src.glob('*.whl'):
    zipfile.ZipFile(whl).extractall(src / 'site')
with tarfile.open(sys.argv[2], 'w:xz', preset=9) as tar:
    tar.add(src / 'site', arcname='.')" "$tmp" "$bundle/site.tar.xz"
    rm -rf "$tmp"
    du -sh "$bundle"
    exit 0
fi

if ! python3 -c "import SimpleITK, monai" 2>/dev/null; then
    site=$(mktemp -d)
    python3 -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter='data')" "$bundle/site.tar.xz" "$site"
    export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1  # this checkout's CTSAM3DLib, not an installed one
out=${OUT:-out}
device=${BENCH_DEVICE:-cuda}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
variants=()
for v in ${BENCH_VARIANTS:-compact_geo restv2_tiny}; do variants+=(--variant "$v"); done
python3 -m CTSAM3DLib.cli.main benchmark --device "$device" $([[ $device == cuda* ]] && echo --amp) \
    "${variants[@]}" --repeats "${BENCH_REPEATS:-10}" --profile \
    --image "${BENCH_IMAGE:-Resources/sample/abdomen_pelvis/ct.nii.gz}" \
    --json "$out/gpu_benchmark.json" 2>&1 | tee "$out/gpu_benchmark.txt"
