"""benchmarks/gpu.py runs end to end on CPU with --quick and prints every table it promises (timings are not asserted)."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu.py"
TABLE_HEADERS = (
    "| workers | images/s | images/s per worker |",
    "| model | grid | GFLOPs/image (train step) | eager images/s | compiled images/s | compiled over eager |",
    "| model | grid | eager images/s | workers needed | compiled images/s | workers needed |",
    "| px | batch | model | grid | eager images/s | compiled images/s | compiled over eager |",
)


def run_script(*args: str, cuda: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the nano models gain nothing from more threads on a shared machine
    if not cuda:
        env["CUDA_VISIBLE_DEVICES"] = ""
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )


def table_rows(report: str, first_cell: str) -> list[list[str]]:
    return [[c.strip() for c in line.split("|")[1:-1]] for line in report.splitlines() if line.startswith(f"| {first_cell} |")]


def test_quick_run_prints_and_writes_every_table(tmp_path):
    out = tmp_path / "gpu.md"
    result = run_script("--quick", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert out.read_text().strip() == result.stdout.strip()  # stdout holds the report only; progress goes to stderr
    for header in TABLE_HEADERS:
        assert header in result.stdout
    assert "GEMM peak" in result.stdout and "bfloat16" in result.stdout and "float32" in result.stdout
    loader = [line for line in result.stdout.splitlines() if line.startswith("| 1 |")]
    assert len(loader) == 1 and float(loader[0].split("|")[2]) > 0  # one worker, some images/s
    inference = table_rows(result.stdout, "28")
    assert len(inference) == 2 * 4  # batch 4 and 1, x ViT and three grids
    for row in inference:
        assert float(row[4]) > 0 and float(row[5]) > 0  # eager and compiled images/s
    training = table_rows(result.stdout, "ViT") + table_rows(result.stdout, "LookupViT")
    assert {row[1] for row in training} == {"-", "3x3", "5x5", "7x7"}


def test_a_budget_too_short_to_compile_still_reports_the_eager_figures():
    result = run_script("--quick", "--budget", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    inference = table_rows(result.stdout, "28")
    assert inference and all(row[5] == "skipped: time budget" and float(row[4]) > 0 for row in inference)


def test_full_mode_refuses_to_run_without_cuda():
    result = run_script(cuda=False)  # CUDA hidden from the child, so this holds on a GPU machine too
    assert result.returncode == 2
    assert "--quick" in result.stderr and len(result.stderr.strip().splitlines()) == 1
