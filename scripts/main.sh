#!/usr/bin/env bash
# The main job, end to end on a fresh machine: install, get Fashion-MNIST, train a multi-resolution
# LookupViT, evaluate it at every compressed grid, and write runs/fashion-mnist/report.md with plots.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -f /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz ] && [ ! -d "${LOOKUPVIT_FASHION_MNIST:-/nonexistent}" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing Fashion-MNIST (Debian package dataset-fashion-mnist)"
    apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null
  else
    DOWNLOAD="download=true"
  fi
fi

make --no-print-directory install
echo "== training (progress bar below; a killed run resumes when this command is run again)"
.venv/bin/lookupvit train --config configs/fashion-mnist.toml --set ${DOWNLOAD:-} "$@"
echo "== done: open runs/fashion-mnist/report.md"
