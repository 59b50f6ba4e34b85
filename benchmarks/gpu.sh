#!/usr/bin/env bash
# One command on a GPU machine: loader, training and inference throughput, recorded in docs/gpu-DATE.md.
#   ./benchmarks/gpu.sh            (extra arguments go to benchmarks/gpu.py, e.g. --budget 200)
# A fresh checkout first runs `make install` (not counted in the 5 minutes). constraints.txt pins
# torch==2.14.1; on a GPU machine check that pip installed a CUDA build of it:
#   .venv/bin/python -c "import torch; print(torch.version.cuda, torch.cuda.is_available())"
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
    make install
fi

record="docs/gpu-$(date +%F).md"
# SIGTERM at 290 s makes the script stop measuring and still write every table measured so far;
# SIGKILL 10 s later if it has not, so the whole run never takes more than 5 minutes.
started=$(mktemp)  # a record older than this file is an earlier run's
trap 'rm -f "$started"' EXIT
status=0
timeout --kill-after=10 290 .venv/bin/python benchmarks/gpu.py --out "$record" "$@" || status=$?
if [ "$record" -nt "$started" ]; then
    echo "record written to $record"
else
    echo "no record written (exit status $status)" >&2
fi
exit "$status"
