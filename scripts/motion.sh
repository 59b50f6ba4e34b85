#!/usr/bin/env bash
# The video job, end to end on a fresh machine: install, get Fashion-MNIST, write the motion videos,
# train LookupViViT, ViViT and the one-frame ViViT, and write runs/motion/report.md with plots.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/fashion-mnist.sh
make --no-print-directory install
echo "== the motion job (a killed run resumes when this command is run again)"
.venv/bin/lookupvit motion --out runs/motion ${FASHION_MNIST_DOWNLOAD:+--download} "$@"
echo "== done: open runs/motion/report.md"
