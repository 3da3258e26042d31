"""The built wheel ships the kernel library and an installed convcli reads it through importlib.resources."""
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (REPO / name).exists():
            shutil.copy(REPO / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("convcli", "kernels"):
        shutil.copytree(REPO / folder, src / folder, ignore=ignore)
    dist = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(src)],
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        offline = ("Could not find a version", "No matching distribution", "Failed to establish", "Network")
        if any(marker in proc.stderr for marker in offline):
            pytest.skip(f"cannot fetch the build backend offline: {proc.stderr.strip().splitlines()[-1]}")
        pytest.fail(f"building the wheel failed:\n{proc.stderr}")
    (path,) = dist.glob("convcli-*.whl")
    return path


def test_wheel_contains_every_library_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    library = sorted(p.name for p in (REPO / "kernels").iterdir() if p.is_file())
    assert library, "the repository's kernels/ folder is empty"
    missing = [n for n in library if f"convcli/_library/{n}" not in names]
    assert not missing, f"not in the wheel: {missing}"


def test_installed_package_reads_the_library_from_the_wheel(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "import convcli, pathlib\n"
        "from convcli.kernels import files, library, resolve\n"
        "folder = library.builtin_dir()\n"
        "assert pathlib.Path(convcli.__file__).parent / '_library' == pathlib.Path(str(folder)), folder\n"
        "names = sorted(library.builtin_entries())\n"
        "for n in names:\n"
        "    resolve(n, ndim=files.read_definition(library.find(n)).dimensions[0])\n"
        "print(' '.join(names))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    expected = sorted(p.stem for p in (REPO / "kernels").iterdir() if p.suffix == ".txt")
    assert proc.stdout.split() == expected
