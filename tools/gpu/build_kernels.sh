#!/usr/bin/env bash
# Build the mamba-ssm and causal-conv1d CUDA wheels for ONE GPU architecture (default sm_90: H100/H200).
#
# Runs ON the GPU machine (no network needed): the sdists come from .gpu/sdist/ (tools/gpu/fetch.sh puts them
# there; carry ".gpu/sdist"). It also runs on any Linux box with nvcc and the target torch (the CPU machine
# with CUDA_HOME=/usr/local/cuda and a Python holding torch 2.11.0 builds the same wheels, only slower).
#
#   bash tools/gpu/build_kernels.sh                # both, in parallel, wheels (or 15 MiB parts) to $OUT
#   ONLY=mamba bash tools/gpu/build_kernels.sh     # only mamba-ssm   (ONLY=causal: only causal-conv1d)
#
# Environment knobs (all optional):
#   OUT            where the wheels go (default .gpu/kernels; on the device $OUT is set by the tool)
#   SDIST_DIR      where the sdists are (default .gpu/sdist)
#   PYTHON         interpreter holding torch (default python3)
#   GENCODE        nvcc -gencode value (default arch=compute_90,code=sm_90; sm_90a: arch=compute_90a,code=sm_90a)
#   NVCC_EXTRA     extra nvcc flags (default --compress-mode=size: fatbins 1.5-20x smaller than nvcc's default,
#                  which is what makes the wheels small enough to carry; decompressed once at module load)
#   LINEINFO       1 keeps upstream's -lineinfo (source lines in Nsight Compute); default 0 drops it, which
#                  roughly halves the compressed device code
#   MAX_JOBS       parallel compile jobs per package (default nproc)
#   BUILD_TIMEOUT  seconds each build may take before it is killed (default 560: the device's per-command
#                  limit is 600 s, so a hung build still leaves time to return the log)
#   WORK           scratch folder (default /tmp/mh_kernel_build)
#   SPLIT_MB       wheels larger than this many MiB are split into parts (default 15; the device returns
#                  files of at most 16 MiB)
# Host debug info is always dropped at link time (LDFLAGS=-Wl,--strip-debug).
# Measured: H100 machine, 16 cores, upstream flags: mamba-ssm 168 s, causal-conv1d 409 s (in parallel, 417 s
# wall), wheels 38.1 + 24.7 MiB. CPU machine, 2 busy cores, these defaults: 1431 s / 1306 s (1434 s wall),
# wheels 8.8 + 3.7 MiB. Both pass install.sh's smoke test on the H100 with identical numbers.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SDIST_DIR=${SDIST_DIR:-$ROOT/.gpu/sdist}
OUT=${OUT:-$ROOT/.gpu/kernels}
PY=${PYTHON:-python3}
GENCODE=${GENCODE:-arch=compute_90,code=sm_90}
NVCC_EXTRA=${NVCC_EXTRA---compress-mode=size}
LINEINFO=${LINEINFO:-0}
JOBS=${MAX_JOBS:-$(nproc)}
BUILD_TIMEOUT=${BUILD_TIMEOUT:-560}
WORK=${WORK:-/tmp/mh_kernel_build}
SPLIT_MB=${SPLIT_MB:-15}
ONLY=${ONLY:-"mamba causal"}

mkdir -p "$OUT" "$WORK"
T0=$(date +%s)

if [ -z "${CUDA_HOME:-}" ]; then
    if [ -x /usr/local/cuda/bin/nvcc ]; then export CUDA_HOME=/usr/local/cuda
    elif command -v nvcc >/dev/null; then export CUDA_HOME=$(dirname "$(dirname "$(command -v nvcc)")")
    fi
fi
export PATH="${CUDA_HOME:+$CUDA_HOME/bin:}$PATH"
echo "== build_kernels: host $(hostname) cores $(nproc) jobs/pkg $JOBS gencode $GENCODE extra '$NVCC_EXTRA' lineinfo $LINEINFO CUDA_HOME=${CUDA_HOME:-?}"
nvcc --version | tail -1
"$PY" -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda)' || exit 1
"$PY" -c 'import setuptools, wheel, packaging, ninja' || { echo "missing setuptools/wheel/packaging/ninja"; exit 1; }

# Patch a setup.py: one -gencode only (plus NVCC_EXTRA), optionally no -lineinfo, always build from source
# (never try the GitHub wheel), and take bdist_wheel from setuptools when 'wheel' no longer provides it.
patch_setup() {
    "$PY" - "$1" "$GENCODE" "$NVCC_EXTRA" "$LINEINFO" <<'EOF'
import sys, re
path, gencode, extra, lineinfo = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4] == "1"
s = open(path).read()
anchor = "    # HACK: The compiler flag -D_GLIBCXX_USE_CXX11_ABI"
assert s.count(anchor) == 1, "anchor for cc_flag not found"
s = s.replace(anchor,
    "    cc_flag = [f for f in cc_flag if f != '-gencode' and not f.startswith('arch=')]"
    " + ['-gencode', %r] + %r  # patched by tools/gpu/build_kernels.sh\n" % (gencode, extra) + anchor)
if not lineinfo:
    assert s.count('"-lineinfo",') == 1, "-lineinfo not found"
    s = s.replace('"-lineinfo",', '')
s, n = re.subn(r'^FORCE_BUILD = .*$', 'FORCE_BUILD = True  # patched: never download a prebuilt wheel', s, flags=re.M)
assert n == 1, "FORCE_BUILD line not found"
old = "from wheel.bdist_wheel import bdist_wheel as _bdist_wheel"
assert s.count(old) == 1, "bdist_wheel import not found"
s = s.replace(old, "try:\n    " + old + "\nexcept ImportError:\n"
              "    from setuptools.command.bdist_wheel import bdist_wheel as _bdist_wheel")
open(path, "w").write(s)
print("patched", path)
EOF
}

build_one() {  # name sdist-glob
    local name=$1 glob=$2 sd dir log t1 t2 rc
    sd=$(ls "$SDIST_DIR"/$glob 2>/dev/null | head -1)
    [ -n "$sd" ] || { echo "[$name] no sdist $SDIST_DIR/$glob"; return 1; }
    rm -rf "$WORK/$name" && mkdir -p "$WORK/$name/wheel" && tar xzf "$sd" -C "$WORK/$name" || return 1
    dir=$(ls -d "$WORK/$name"/*/ | grep -v '/wheel/$' | head -1)
    patch_setup "$dir/setup.py" || return 1
    log="$WORK/$name.log"
    t1=$(date +%s)
    ( cd "$dir" && MAMBA_FORCE_BUILD=TRUE CAUSAL_CONV1D_FORCE_BUILD=TRUE MAX_JOBS=$JOBS TORCH_CUDA_ARCH_LIST=9.0 \
        LDFLAGS="${LDFLAGS:-} -Wl,--strip-debug" \
        PIP_NO_INDEX=1 timeout -k 5 "$BUILD_TIMEOUT" \
        "$PY" -m pip wheel -v --no-build-isolation --no-deps --no-index -w "$WORK/$name/wheel" . ) >"$log" 2>&1
    rc=$?
    t2=$(date +%s)
    echo "[$name] rc=$rc build time $((t2 - t1)) s ($(grep -c 'ptxas info    : Compiling entry' "$log") kernel entries compiled)"
    if [ $rc -ne 0 ]; then echo "[$name] FAILED, log tail:"; tail -40 "$log"; fi
    return $rc
}

pids=()
for n in $ONLY; do
    case $n in
        mamba)  build_one mamba 'mamba_ssm-*.tar.gz' & pids+=($!) ;;
        causal) build_one causal 'causal_conv1d-*.tar.gz' & pids+=($!) ;;
        *) echo "unknown ONLY entry $n"; exit 2 ;;
    esac
done
fail=0
for p in "${pids[@]}"; do wait "$p" || fail=1; done

# Hand the wheels back: whole if small enough, else split into parts (install.sh re-joins them).
for w in "$WORK"/*/wheel/*.whl; do
    [ -e "$w" ] || continue
    b=$(basename "$w")
    sz=$(stat -c %s "$w")
    echo "wheel $b $((sz / 1024)) KiB"
    "$PY" -c 'import sys, zipfile
for i in zipfile.ZipFile(sys.argv[1]).infolist():
    if i.filename.endswith(".so"): print("   %s %.1f MiB (%.1f MiB compressed)" % (i.filename, i.file_size / 2**20, i.compress_size / 2**20))' "$w"
    if [ "$sz" -gt $((SPLIT_MB * 1024 * 1024)) ]; then
        split -b "${SPLIT_MB}M" -d -a 1 "$w" "$OUT/$b.part"
    else
        cp "$w" "$OUT/"
    fi
done
# One compressed log of both builds (ptxas register/spill report included).
( cd "$WORK" && tar czf "$OUT/build_logs.tar.gz" ./*.log 2>/dev/null )
echo "== returned files:"; ls -l "$OUT"
echo "== total $(du -sk "$OUT" | cut -f1) KiB, $(ls "$OUT" | wc -l) files; wall $(( $(date +%s) - T0 )) s"
exit $fail
