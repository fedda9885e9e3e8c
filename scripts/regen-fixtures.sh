#!/usr/bin/env bash
# Regenerates the committed reference fixtures under tests/fixtures/ (tiny HF models + GGUF twins + llama.cpp
# references, and the real-model llama.cpp references). Not run by the tests: they read the committed outputs.
# Needs PyPI access; the first run builds llama-cpp-python from source (about 10 min on 2 cores) and downloads torch.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
# The versions the committed fixtures were made with; other versions may shift the last digits of the references.
"$venv/bin/python" -m pip install --quiet \
  torch==2.15.0 transformers==5.23.0 tokenizers==0.23.3 safetensors==0.8.0 numpy==2.4.6 gguf==0.19.0 \
  Jinja2==3.1.6 sentencepiece==0.2.3 protobuf==7.36.2 peft==0.21.2 llama-cpp-python==0.3.36

bash scripts/fetch-models.sh
bash scripts/fetch-reference.sh

"$venv/bin/python" tests/fixtures/tiny/gen_tiny.py
"$venv/bin/python" tests/fixtures/tiny/gguf_twins.py
"$venv/bin/python" tests/fixtures/real/gen_real_refs.py
"$venv/bin/python" tests/fixtures/lora/gen_lora.py
"$venv/bin/python" tests/fixtures/train/gen_train.py
