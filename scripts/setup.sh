#!/usr/bin/env bash
# Installs the Debian 12 packages gpugrid needs to build and to run its tests.
# Idempotent: when every package is already installed it does not touch apt at all.
# Uses sudo only when not run as root. The CUDA toolkit is optional and not installed here.
set -euo pipefail

packages=(
  # build
  cmake ninja-build g++ ccache pkg-config
  # libraries
  libcaf-dev libboost-dev libboost-system-dev libflatbuffers-dev flatbuffers-compiler libfmt-dev
  catch2 libcli11-dev libsodium-dev libssl-dev libprotobuf-dev protobuf-compiler libonnx-dev
  libopenblas-dev libtomlplusplus-dev
  # JSON (CLI output, JSON-RPC bodies, tokenizer.json, HTTP APIs); log lines with levels and timestamps
  nlohmann-json3-dev libspdlog-dev
  # chain settlement: secp256k1 signatures, Keccak-256
  libsecp256k1-dev libcrypto++-dev
  # llm/: Unicode regexes and normalization for tokenizers
  libpcre2-dev libicu-dev
  # examples/chat/train.py: the King James Bible, the bundled chat model's corpus (public domain)
  bible-kjv bible-kjv-text
  # tests: the libFuzzer targets (clang's sanitizer and fuzzer runtimes)
  clang libclang-rt-14-dev
  # tests: fixture generation, the completion tests
  python3 python3-numpy python3-onnx python3-venv python3-pip python3-sklearn python3-torch bash-completion
  # the completion tests drive zsh and fish too; groff checks the man page
  zsh fish groff-base
  # tests: serve's HTTP and TLS checks
  curl openssl
  # tests: providers behind NAT (tests/nat_relay_test.sh: iptables MASQUERADE in namespaces)
  iptables
)

missing=()
for p in "${packages[@]}"; do
  if [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)" != "installed" ]; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup.sh: all ${#packages[@]} packages are installed"
  exit 0
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "setup.sh: not root and no sudo; install these as root: ${missing[*]}" >&2
    exit 1
  fi
  sudo=(sudo)
fi

echo "setup.sh: installing ${missing[*]}"
"${sudo[@]}" apt-get update
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
