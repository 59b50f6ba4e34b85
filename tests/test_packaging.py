"""The package as users get it: `python -m build` makes a wheel that installs into a fresh venv, where the CLI runs."""

import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import lookupvit

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_holds_every_module_and_its_cli_runs_from_a_fresh_venv(tmp_path):
    source = tmp_path / "source"  # a copy, so the build leaves no build/ or egg-info in the checkout
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, source / name)
    # --no-isolation: the build backend (setuptools) from this environment, so no network is needed
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path / "dist"), str(source)], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    assert wheel.name == f"lookupvit-{lookupvit.__version__}-py3-none-any.whl"
    modules = {str(path.relative_to(ROOT / "src")) for path in (ROOT / "src" / "lookupvit").rglob("*.py")}
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(name).decode() for name in names if name.endswith("entry_points.txt"))
    assert modules <= names, sorted(modules - names)
    assert "lookupvit = lookupvit.cli:main" in entry_points
    # A fresh venv with the wheel alone; its dependencies (torch, ...) come from this environment's site-packages
    # on PYTHONPATH, which does not carry this checkout's editable install (that needs its .pth files).
    fresh = tmp_path / "fresh"
    venv.create(fresh, with_pip=False)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(fresh / "bin" / "python"), "install", "--no-deps", "--quiet", str(wheel)], check=True)
    environment = {"PATH": f"{fresh / 'bin'}:/usr/bin:/bin", "PYTHONPATH": sysconfig.get_paths()["purelib"], "HF_HUB_OFFLINE": "1"}
    where = subprocess.run([str(fresh / "bin" / "python"), "-c", "import lookupvit; print(lookupvit.__file__)"], env=environment, capture_output=True, text=True, check=True)
    assert where.stdout.startswith(str(fresh)), where.stdout  # the installed wheel, not the checkout
    flops = subprocess.run([str(fresh / "bin" / "lookupvit"), "flops", "--model", "lookupvit_nano4", "--grid", "3"], env=environment, capture_output=True, text=True)
    assert flops.returncode == 0, flops.stderr
    assert "3x3" in flops.stdout


def test_the_api_reference_is_generated_from_the_current_docstrings():
    check = subprocess.run([sys.executable, str(ROOT / "scripts" / "api_reference.py"), "--check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
