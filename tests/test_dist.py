"""The package as users get it: the sdist, and the wheel built from it (as `make dist` and
`pip install` do), carry every module and every file the package reads at run time.

Built once, without build isolation (no index needed), from a copy of the source so the
checkout gets no build/ or egg-info.
"""

import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from pacore_graph.eval import SAMPLE

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pacore_graph"


def data_files() -> set[str]:
    """The package's files that are not modules: what package-data must carry."""
    return {
        str(p.relative_to(ROOT))
        for p in PACKAGE.rglob("*")
        if p.is_file() and p.suffix not in {".py", ".pyc"} and "__pycache__" not in p.parts
    }


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(PACKAGE, source / "pacore_graph", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("dist")
    build = [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(source)]
    result = subprocess.run(build, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return out


def test_the_package_has_data_files_to_carry():
    # What the code opens at run time (the eval sample), and the PEP 561 marker for mypy.
    loaded = str(SAMPLE.resolve().relative_to(ROOT))
    assert {"pacore_graph/py.typed", loaded} <= data_files()


def test_the_wheel_and_sdist_carry_every_file_the_package_reads(dist):
    [wheel] = dist.glob("*.whl")
    [sdist] = dist.glob("*.tar.gz")
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    with tarfile.open(sdist) as tar:
        in_sdist = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    modules = {str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py")}
    assert data_files() | modules <= in_wheel
    assert data_files() | modules <= in_sdist
    entry_points = next(n for n in in_wheel if n.endswith(".dist-info/entry_points.txt"))
    assert "pacore = pacore_graph.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
