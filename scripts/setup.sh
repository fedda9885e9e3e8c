#!/usr/bin/env bash
# Installs what building and testing Aviary needs on a fresh Debian machine that has only the Rust toolchain.
# Quick when everything is present.
set -euo pipefail

sudo_if_needed() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v python3 >/dev/null || missing+=(python3)
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
command -v sha256sum >/dev/null || missing+=(coreutils)
# Mesa's Vulkan drivers (lavapipe runs Vulkan on the CPU) give the GPU backend a real wgpu adapter on any machine;
# Chromium (with SwiftShader's WebGPU) and chromedriver run the browser tests. One apt run for all of them.
for pkg in mesa-vulkan-drivers libvulkan1 chromium chromium-driver; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} with apt…"
  sudo_if_needed apt-get update -qq
  sudo_if_needed apt-get install -y -qq "${missing[@]}"
fi

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
  rustup target add wasm32-unknown-unknown
fi

# The browser app's build tools and end-to-end test tools.
"$(dirname "$0")/web-setup.sh"
