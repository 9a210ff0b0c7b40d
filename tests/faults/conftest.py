"""Fixtures for the fault-injection tests: one tiny trained run, and the CLI in a child process under real
limits (a file size limit, a tiny tmpfs, a read-only mount).

Everything is as small as a run can be (width 0.125, one epoch of two steps): these tests check what
happens when things break, not what a model learns.
"""
from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from lowres.config import Config, load_config

REPO_ROOT = Path(__file__).resolve().parents[2]
MOUNT_LISTING = "--- files on the mount:"
CHILD_TRAIN = REPO_ROOT / "tests" / "training" / "_child_train.py"  # the kill/resume tests' child process


@pytest.fixture(scope="session")
def fault_cache(cache_root: Path) -> Path:
    """The session's one cache folder (tests/conftest.py)."""
    return cache_root


@pytest.fixture(scope="session")
def fault_config(fault_cache: Path) -> Callable[..., Config]:
    """``fault_config(*overrides)``: smoke preset, 1 epoch of 2 steps, deterministic, one thread."""

    def make(*overrides: str) -> Config:
        return load_config("smoke", [f"data.cache_dir={fault_cache}", "train.threads=1", "train.epochs=1",
                                     "train.max_steps_per_epoch=2", "data.max_val=16", "eval.bootstrap=10",
                                     "train.deterministic=true", *overrides])

    return make


@pytest.fixture(scope="session")
def trained_run(fault_config: Callable[..., Config], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run of ``fault_config()``: the reference the interrupted ones must end up equal to."""
    from lowres.training.run import train

    out = tmp_path_factory.mktemp("faults-run") / "run"
    train(fault_config(), out, progress=False)
    return out


@pytest.fixture
def run_copy(trained_run: Path, tmp_path: Path) -> Path:
    """A private copy of the trained run, free to damage."""
    return Path(shutil.copytree(trained_run, tmp_path / "run"))


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
            "OMP_NUM_THREADS": "1"}


def run_cli(args: list[str], *, file_size_limit: int | None = None, prefix: list[str] | None = None,
            timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m lowres.cli ARGS`` in a child process; ``file_size_limit`` sets RLIMIT_FSIZE (writes beyond
    it fail with EFBIG, as on a full disk; SIGXFSZ is ignored so the write returns the error instead of
    killing the process); ``prefix`` wraps the command (unshare + mount)."""

    def limit() -> None:
        if file_size_limit is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    return subprocess.run([*(prefix or []), sys.executable, "-m", "lowres.cli", *args], cwd=REPO_ROOT,
                          env={**_env(), **(env or {})}, capture_output=True, text=True, timeout=timeout,
                          preexec_fn=limit)


def run_child_train(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CHILD_TRAIN), *args], cwd=REPO_ROOT, env=_env(),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def cli() -> Callable[..., subprocess.CompletedProcess]:
    return run_cli


@pytest.fixture(scope="session")
def child_train() -> Callable[..., subprocess.CompletedProcess]:
    return run_child_train


@pytest.fixture(scope="session")
def private_mount() -> Callable[[Path, str, bool], list[str]]:
    """``private_mount(folder, size, read_only)``: a command prefix that runs its command in a private mount
    namespace where ``folder`` is a fresh tmpfs of ``size`` (e.g. ``"64k"``), remounted read-only on request.
    The mount is never visible outside that process, so the command's stdout ends with ``MOUNT_LISTING``
    and a recursive listing of the tmpfs (see :func:`mount_listing`). Skips where namespaces or mounts are
    not allowed."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare(1) is not installed: no private tmpfs for full-disk / read-only tests")
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                            "d=$(mktemp -d) && mount -t tmpfs -o size=16k tmpfs \"$d\" && umount \"$d\""],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"mounting a tmpfs in a private mount namespace is not allowed here: {probe.stderr.strip()}")

    def prefix(folder: Path, size: str, read_only: bool = False) -> list[str]:
        remount = ' && mount -o remount,ro "$MNT"' if read_only else ""
        script = (f'mount -t tmpfs -o size={size} tmpfs "$MNT"{remount} && '
                  f'{{ "$@"; rc=$?; echo {MOUNT_LISTING}; (cd "$MNT" && find . -mindepth 1 -printf "%p %s\\n"); exit $rc; }}')
        return ["env", f"MNT={folder}", "unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh"]

    return prefix


def mount_listing(stdout: str) -> dict[str, int]:
    """``{relative path: size}`` of what a :func:`private_mount` command left on its tmpfs."""
    tail = stdout.split(MOUNT_LISTING, 1)[1] if MOUNT_LISTING in stdout else ""
    pairs = (line.rsplit(" ", 1) for line in tail.strip().splitlines() if line.strip())
    return {path[2:]: int(size) for path, size in pairs}


@pytest.fixture(scope="session")
def listing() -> Callable[[str], dict[str, int]]:
    return mount_listing
