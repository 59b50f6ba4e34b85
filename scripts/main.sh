#!/usr/bin/env bash
# The main job, end to end on a fresh machine: install, get Fashion-MNIST, train a multi-resolution
# LookupViT, evaluate it at every compressed grid, and write runs/fashion-mnist/report.md with plots.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/fashion-mnist.sh

make --no-print-directory install
echo "== training (progress bar below; a killed run resumes when this command is run again)"
.venv/bin/lookupvit train --config configs/fashion-mnist.toml --set ${FASHION_MNIST_DOWNLOAD:+download=true} "$@"
echo "== done: open runs/fashion-mnist/report.md"
