#!/usr/bin/env bash
# Download, on a machine with package registries, the wheels that tools/gpu_check.sh installs on a GPU
# machine without any (Python 3.12, manylinux x86_64): the pinned list tools/gpu_wheels.txt, into .whl/
# (git-ignored; it travels with the working tree, 64 MiB at most).
#   * binary wheels: `pip download --only-binary=:all: --python-version 3.12 --platform manylinux...`;
#   * sal-detectron2 (the Detectron2 snapshot) is tagged cp310 but is Python apart from a _C for 3.10
#     that nothing here loads (nor could on 3.12): downloaded for 3.10 and repacked as py3-none-any
#     without that _C, so that 3.12's pip takes it;
#   * fvcore, iopath and antlr4-python3-runtime exist only as sdists: built here into pure-Python wheels.
# Builds and repacks are reproducible (SOURCE_DATE_EPOCH fixes the archive timestamps), so every wheel has
# one sha256, pinned in tools/gpu_wheels.txt (`name==version --hash=sha256:HEX`): each wheel made here is
# checked against its pin, and tools/gpu_check.sh checks them again before installing.
# Usage: tools/gpu_wheels.sh [--write-hashes] [DEST] (default .whl); --write-hashes records the sha256 of the
# wheels made instead of checking them (after a version change; commit the list).
# Environment: PYTHON (default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
WRITE_HASHES=()
if [[ ${1:-} == --write-hashes ]]; then WRITE_HASHES=(--write-hashes); shift; fi
DEST=${1:-.whl}
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-315532800}  # 1980-01-01, the earliest a zip can store
LIMIT_MIB=48  # the working tree travels in 64 MiB; leave room for the sources
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform linux_x86_64)
SDIST_ONLY=" fvcore iopath antlr4-python3-runtime "
RETAGGED=" sal-detectron2 "

mapfile -t requirements < <(sed -e 's/#.*//' -e 's/--hash=[^[:space:]]*//g' -e 's/[[:space:]]//g' \
    tools/gpu_wheels.txt | grep -v '^$')
rm -rf "$DEST"
mkdir -p "$DEST"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

binary=() sdists=() retag=()
for requirement in "${requirements[@]}"; do
    name=${requirement%%==*}
    if [[ $SDIST_ONLY == *" $name "* ]]; then sdists+=("$requirement")
    elif [[ $RETAGGED == *" $name "* ]]; then retag+=("$requirement")
    else binary+=("$requirement"); fi
done

echo "[gpu_wheels] binary wheels for CPython 3.12 manylinux x86_64: ${binary[*]}"
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PLATFORMS[@]}" -d "$DEST" "${binary[@]}"

if ((${#sdists[@]})); then
    echo "[gpu_wheels] pure-Python wheels built from sdists: ${sdists[*]}"
    # no cache: a wheel built earlier without SOURCE_DATE_EPOCH would carry other timestamps
    "$PYTHON" -m pip wheel -q --no-deps --no-cache-dir -w "$tmp/built" "${sdists[@]}"
    for wheel in "$tmp"/built/*.whl; do
        [[ $(basename "$wheel") == *-py3-none-any.whl || $(basename "$wheel") == *-py2.py3-none-any.whl ]] || {
            echo "[gpu_wheels] $(basename "$wheel") is not a pure-Python wheel" >&2; exit 1; }
        mv "$wheel" "$DEST/"
    done
fi

if ((${#retag[@]})); then
    echo "[gpu_wheels] repacked as py3-none-any without their compiled part: ${retag[*]}"
    "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.10 --implementation cp \
        "${PLATFORMS[@]}" -d "$tmp/retag" "${retag[@]}"
    for wheel in "$tmp"/retag/*.whl; do
        "$PYTHON" -m wheel unpack -d "$tmp/unpacked" "$wheel" >/dev/null
    done
    for tree in "$tmp"/unpacked/*/; do
        find "$tree" -name '*.so' -delete
        wheel_file=$(echo "$tree"*.dist-info/WHEEL)
        sed -i -e '/^Tag:/d' -e '/^$/d' -e 's/^Root-Is-Purelib:.*/Root-Is-Purelib: true/' "$wheel_file"
        echo "Tag: py3-none-any" >> "$wheel_file"
        "$PYTHON" -m wheel pack -d "$DEST" "$tree" >/dev/null
    done
fi

count=$(find "$DEST" -type f -name '*.whl' | wc -l)
if ((count != ${#requirements[@]})); then
    echo "[gpu_wheels] FAILED: $count wheels for ${#requirements[@]} requirements" >&2
    ls "$DEST" >&2
    exit 1
fi
size_kib=$(du -sk "$DEST" | cut -f1)
echo "[gpu_wheels] $count wheels, $((size_kib / 1024)) MiB in $DEST:"
ls -1 "$DEST"
if ((size_kib > LIMIT_MIB * 1024)); then
    echo "[gpu_wheels] FAILED: $DEST is larger than $LIMIT_MIB MiB" >&2
    exit 1
fi
"$PYTHON" tools/gpu_check.py wheels "$DEST" "${WRITE_HASHES[@]}" || {
    echo "[gpu_wheels] FAILED: the wheels are not the pinned ones (tools/gpu_wheels.txt); if the list's" \
         "versions changed on purpose, rerun with --write-hashes and commit the list" >&2; exit 1; }
