#!/usr/bin/env bash
# Run on the CPU development machine (it reaches PyPI; the GPU machine reaches nothing).
# Fills the git-ignored folder .gpu/ with everything the GPU machine lacks for this project:
#
#   .gpu/sdist/   mamba_ssm-2.3.2.post1.tar.gz, causal_conv1d-1.7.0.tar.gz       -> carry for build_kernels.sh
#   .gpu/dl/      the cp312 manylinux x86_64 wheels of nnU-Net 2.8.1's missing dependencies and mambapy
#                 (as downloaded; 67 MiB, too big to carry as they are, SimpleITK alone is 50 MiB)
#   .gpu/deps/    deps.tar.xz: the same wheels re-zipped without compression, tarred and xz -9e'd
#                 (about 38 MiB; the .so files compress far better as one xz stream)      -> carry for install.sh
#
#   bash tools/gpu/fetch.sh            # idempotent: re-packs deps.tar.xz only when the wheel set changed
#   PYTHON=/path/python bash tools/gpu/fetch.sh   # a Python whose pip is used; it must hold torch for the sdists
#
# Which packages: the run-time closure of nnunetv2==2.8.1 (+ mambapy) minus what the GPU image already has
# (KINDS.md's list of the 'cuda' image: numpy, scipy, torch, timm, scikit-image, pandas, matplotlib, seaborn,
# tifffile, requests, httpx, msgpack, rich, threadpoolctl, einops, pyyaml, tqdm, ... are there).
# Left out on purpose:
#   imagecodecs (27 MiB)  only an optional codec plug-in of tifffile (TIFF datasets); nnU-Net runs without it
#   pydantic(+core), h2/hpack/hyperframe  declared by blosc2 but imported only by its remote/CTable features
#   argparse 1.4.0        declared by unittest2; a Python-2-era copy that would shadow the standard library
# One version of each, the versions the project's CPU venv runs nnU-Net 2.8.1 with.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
G=$ROOT/.gpu
PY=${PYTHON:-$ROOT/.venv/bin/python}
[ -x "$PY" ] || PY=python3
PIP=("$PY" -m pip)

SDISTS=(mamba-ssm==2.3.2.post1 causal-conv1d==1.7.0)
WHEELS=(
    nnunetv2==2.8.1
    acvl-utils==0.2.6                  # sdist only on PyPI: built here into a py3-none-any wheel
    batchgenerators==0.25.5
    batchgeneratorsv2==0.3.6
    dynamic-network-architectures==0.4.4
    simpleitk==2.5.7
    nibabel==5.4.2
    blosc2==4.14.1
    ndindex==1.10.1
    numexpr==2.14.2
    connected-components-3d==4.1.1
    yacs==0.1.8
    graphviz==0.21
    future==1.0.0                      # batchgenerators' declared deps (not imported at run time)
    unittest2==1.1.0
    traceback2==1.4.0
    linecache2==1.0.0
    mambapy==1.2.0
)
PLAT=(--python-version 3.12 --implementation cp
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64)

mkdir -p "$G/sdist" "$G/dl" "$G/deps"

echo "== sdists -> .gpu/sdist"
for s in "${SDISTS[@]}"; do
    n=${s%%==*}; v=${s#*==}; f=$(echo "$n" | tr - _)-$v.tar.gz
    if [ -s "$G/sdist/$f" ]; then continue; fi
    # setup.py of both imports torch: prepare metadata with this Python's torch, no isolation.
    "${PIP[@]}" download -q --no-deps --no-binary :all: --no-build-isolation -d "$G/sdist" "$s" 2>&1 \
        | grep -v '^WARNING: Location' || true
    [ -s "$G/sdist/$f" ] || { echo "could not download $s"; exit 1; }
done

echo "== wheels -> .gpu/dl"
want=()
for s in "${WHEELS[@]}"; do
    n=${s%%==*}; v=${s#*==}; norm=$(echo "$n" | tr - _ | tr A-Z a-z)
    want+=("$norm-$v")
    if ls "$G/dl/" 2>/dev/null | tr A-Z a-z | grep -q "^$norm-$v-"; then continue; fi
    if ! "${PIP[@]}" download -q --no-deps --only-binary=:all: "${PLAT[@]}" -d "$G/dl" "$s" >/dev/null 2>&1; then
        # No binary wheel: build one, but only accept a pure-Python result.
        "${PIP[@]}" wheel -q --no-deps -w "$G/dl" "$s" 2>&1 | grep -v '^WARNING: Location' || true
        ls "$G/dl/" | tr A-Z a-z | grep -q "^$norm-$v-py[23].*-none-any.whl$" \
            || { echo "no cp312 manylinux wheel and no pure-Python build for $s"; exit 1; }
    fi
done
# One version per package: drop anything in dl/ that is not on the list (older pins).
for f in "$G"/dl/*.whl; do
    b=$(basename "$f" | tr A-Z a-z); keep=0
    for w in "${want[@]}"; do case $b in "$w"-*) keep=1 ;; esac; done
    [ $keep = 1 ] || { echo "removing stale $(basename "$f")"; rm -f "$f"; }
done

echo "== packing .gpu/deps/deps.tar.xz"
stamp=$(cd "$G/dl" && ls -l --time-style=+%s *.whl | awk '{print $5, $6, $7}' | sha256sum | cut -c1-16)
if [ -s "$G/deps/deps.tar.xz" ] && [ "$(cat "$G/deps/.stamp" 2>/dev/null)" = "$stamp" ]; then
    echo "unchanged, kept"
else
    stage=$(mktemp -d)
    "$PY" - "$G/dl" "$stage" <<'EOF'
import sys, os, zipfile, copy
src, dst = sys.argv[1], sys.argv[2]
for name in sorted(os.listdir(src)):
    if not name.endswith(".whl"):
        continue
    with zipfile.ZipFile(os.path.join(src, name)) as zin, \
         zipfile.ZipFile(os.path.join(dst, name), "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info)
            out = copy.copy(info)
            out.compress_type = zipfile.ZIP_STORED
            zout.writestr(out, data)
EOF
    rm -f "$G/deps/deps.tar.xz"
    tar -C "$stage" --sort=name --owner=0 --group=0 --mtime=@0 -cf - . \
        | xz -9e -T0 > "$G/deps/deps.tar.xz.tmp"
    mv "$G/deps/deps.tar.xz.tmp" "$G/deps/deps.tar.xz"
    echo "$stamp" > "$G/deps/.stamp"
    rm -rf "$stage"
fi

echo "== sizes"
( cd "$G" && ls -l sdist/*.tar.gz dl/*.whl deps/deps.tar.xz | awk '{printf "%10.2f MiB  %s\n", $5/1048576, $NF}' )
printf '%10.2f MiB  dl/ total (not carried)\n' "$(du -sb "$G/dl" | awk '{print $1/1048576}')"
for d in sdist deps kernels; do
    [ -d "$G/$d" ] && printf '%10.2f MiB  carry .gpu/%s\n' "$(du -sb "$G/$d" | awk '{print $1/1048576}')" "$d"
done
tree=$(cd "$ROOT" && git ls-files -co --exclude-standard -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
printf '%10.2f MiB  working tree (travels with every call)\n' "$(echo "${tree:-0}" | awk '{print $1/1048576}')"
if ! ls "$G"/kernels/*.whl* >/dev/null 2>&1; then
    echo "NOTE: .gpu/kernels/ has no mamba-ssm/causal-conv1d wheels: build them (tools/gpu/README.md, 'Kernel wheels')."
fi
exit 0
