#!/usr/bin/env bash
# Fetches third-party reference data for the tests — llama.cpp's vocabulary test files and the real chat templates
# it tests against — from the llama-cpp-python 0.3.36 source distribution on PyPI (vendor/llama.cpp/models/), into
# $AVIARY_CACHE/reference. Verified by sha256; quick when already there.
set -euo pipefail
cache="${AVIARY_CACHE:-$HOME/.cache/aviary}"
dest="$cache/reference"
stamp="$dest/.complete-0.3.36"
[ -f "$stamp" ] && exit 0

echo "fetching llama.cpp reference vocabularies and chat templates (llama-cpp-python 0.3.36 sdist from PyPI)…"
mkdir -p "$dest/vocab" "$dest/chat-templates"
python3 - "$dest" <<'PY'
import hashlib, os, re, sys, tarfile, tempfile, urllib.request

dest = sys.argv[1]
sha = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
index = urllib.request.urlopen("https://pypi.org/simple/llama-cpp-python/").read().decode()
links = re.findall(r'href="([^"#]*llama_cpp_python-0\.3\.36\.tar\.gz)', index)
if not links:
    sys.exit("llama-cpp-python 0.3.36 sdist not found on PyPI")
url = links[0] if links[0].startswith("http") else "https://pypi.org" + links[0]
with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "sdist.tar.gz")
    urllib.request.urlretrieve(url, path)
    h = hashlib.sha256(open(path, "rb").read()).hexdigest()
    if h != sha:
        sys.exit(f"sha256 mismatch for the llama-cpp-python sdist: {h}")
    vocab = re.compile(r"ggml-vocab-(gpt-2|llama-bpe|llama-spm|phi-3)\.gguf(\.inp|\.out)?$")
    templates = {
        "HuggingFaceTB-SmolLM3-3B.jinja", "Qwen-Qwen2.5-7B-Instruct.jinja", "google-gemma-2-2b-it.jinja",
        "google-gemma-4-31B-it.jinja", "meta-llama-Llama-3.1-8B-Instruct.jinja",
        "meta-llama-Llama-3.2-3B-Instruct.jinja", "microsoft-Phi-3.5-mini-instruct.jinja",
        "mistralai-Mistral-Nemo-Instruct-2407.jinja",
    }
    with tarfile.open(path) as tar:
        for m in tar.getmembers():
            parts = m.name.split("/")
            if not m.isfile() or "vendor" not in parts or "models" not in parts:
                continue
            name = parts[-1]
            if parts[-2] == "models" and vocab.match(name):
                out = os.path.join(dest, "vocab", name)
            elif parts[-2] == "templates" and name in templates:
                out = os.path.join(dest, "chat-templates", name)
            else:
                continue
            with tar.extractfile(m) as src, open(out, "wb") as f:
                f.write(src.read())
PY
n_vocab=$(ls "$dest/vocab" | wc -l)
n_templates=$(ls "$dest/chat-templates" | wc -l)
if [ "$n_vocab" != 12 ] || [ "$n_templates" != 8 ]; then
  echo "expected 12 vocabulary files and 8 templates, got $n_vocab and $n_templates" >&2
  exit 1
fi
touch "$stamp"
