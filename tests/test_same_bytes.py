"""The same bytes on every student's machine.

A fresh `git clone` of the committed HEAD (never a copy of this working tree,
whose dvc.lock `make` may have rewritten), set up with the README's `make` as
on other x86_64 CPUs and with other Pythons, reproduces the committed dvc.lock
to the byte and leaves git and DVC clean. Other CPUs are emulated the way the libraries choose their
code: OpenBLAS's kernel (OPENBLAS_CORETYPE), numpy's SIMD paths
(NPY_DISABLE_CPU_FEATURES) and glibc's libm variants (GLIBC_TUNABLES).
"""

import glob
import os
import shutil
import subprocess

import pytest
import yaml

from helpers import REPO, md5, new_machine_env


def _cpu_has(flag):
    return f" {flag} " in open("/proc/cpuinfo").read().replace("\n", " ") if os.path.exists("/proc/cpuinfo") else False


def _python(minor):
    """A working python3.MINOR: on PATH, or one of pyenv's."""
    candidates = [shutil.which(f"python3.{minor}")]
    candidates += sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/3.{minor}.*/bin/python3.{minor}")))
    for candidate in filter(None, candidates):
        if subprocess.run([candidate, "--version"], capture_output=True).returncode == 0:
            return candidate
    return None


NUMPY_DISPATCH = "X86_V3 X86_V4 AVX512_ICL AVX512_SPR"  # numpy 2.4's names for all it dispatches above x86-64-v2
# name: (environment, Python for `make PYTHON=...`, or None for make's own choice)
MACHINES = {
    "this CPU": ({}, None),
    "Prescott": ({"OPENBLAS_CORETYPE": "Prescott"}, None),
    "Nehalem": ({"OPENBLAS_CORETYPE": "Nehalem"}, None),
    "Sandybridge": ({"OPENBLAS_CORETYPE": "Sandybridge"}, None),
    "Haswell": ({"OPENBLAS_CORETYPE": "Haswell"}, None),
    "numpy without AVX2 and AVX-512": ({"NPY_DISABLE_CPU_FEATURES": NUMPY_DISPATCH}, None),
    "glibc without AVX2 and FMA": ({"GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX2,-FMA,-AVX512F"}, None),
    "Python 3.12": ({}, 12),
    "Python 3.13": ({}, 13),
}


@pytest.fixture(scope="module")
def first_venv():
    """Where the first fresh clone's `make` built its venv: the later clones
    on the same Python link to it, which saves a minute each (`make` then
    reinstalls into it)."""
    return {}


@pytest.mark.slow
@pytest.mark.parametrize("machine", MACHINES)
def test_fresh_clone_make_reproduces_the_committed_lock_on_every_machine(machine, first_venv, tmp_path):
    extra, minor = MACHINES[machine]
    if extra.get("OPENBLAS_CORETYPE") == "Haswell" and not _cpu_has("avx2"):
        pytest.skip("this CPU cannot run OpenBLAS's Haswell kernel (no AVX2)")
    python = _python(minor) if minor else None
    if minor and not python:
        if os.environ.get("CI"):
            pytest.fail(f"CI needs python3.{minor} (pyenv) to prove the bytes on it")
        pytest.skip(f"no python3.{minor} here")
    root = tmp_path / "ws"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(root)], check=True)
    if first_venv and not python:
        (root / ".venv").symlink_to(first_venv["path"])
    env = new_machine_env(extra)

    def sh(cmd):
        return subprocess.run(cmd, cwd=root, shell=True, env=env, capture_output=True, text=True)

    made = sh(f"make PYTHON={python}" if python else "make")
    assert made.returncode == 0, made.stdout + made.stderr
    if not python:
        first_venv.setdefault("path", root / ".venv")
    else:
        assert f"Python 3.{minor}" in made.stdout
    assert "reproduced the committed data and model byte for byte" in made.stdout, made.stdout
    assert sh("git status --porcelain").stdout == ""
    assert "Data and pipelines are up to date." in sh(".venv/bin/dvc status").stdout
    committed = yaml.safe_load(sh("git show HEAD:dvc.lock").stdout)
    for stage in committed["stages"].values():
        for out in stage["outs"]:
            assert md5(root / out["path"]) == out["md5"], f"{out['path']} differs on {machine}"
    assert "Data and pipelines are up to date." in sh("make").stdout
