#!/usr/bin/env bash
# Install the Debian packages lopad needs to build and test (idempotent).
# Usage: scripts/deps.sh [--test]   (--test adds what the test suite needs)
set -euo pipefail
pkgs=(build-essential cmake pkg-config libpcre2-dev libutf8proc-dev libcjson-dev)
# libmicrohttpd-dev: `lopad serve` (optional: without it the rest builds)
pkgs+=(libmicrohttpd-dev)
if [[ "${1:-}" == "--test" ]]; then
  # bubblewrap: the sandbox of `lopad eval`'s generated code (HumanEval, MBPP);
  # util-linux: prlimit sets that code's limits inside it
  pkgs+=(python3 bubblewrap util-linux)
  # python3-venv: tests/cli/test_serve.sh installs the openai client into a venv
  pkgs+=(python3-venv)
  # chromium: tests/serve/test_web.py drives lopad serve's page headless
  pkgs+=(chromium)
  # OpenMPI: LoPA-Dist (mpirun -np R lopad run --lopa K; tests/cli/test_mpi.sh)
  pkgs+=(openmpi-bin libopenmpi-dev iproute2)
  # gnuplot: lopad eval --plot
  pkgs+=(gnuplot-nox)
  # clang + libFuzzer: the clang UBSan build and the brief fuzz runs of make test
  pkgs+=(clang libclang-rt-dev)
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  echo "lopad: installing ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
