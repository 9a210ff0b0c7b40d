"""torch.compile: the forward traces as one graph (the input check breaks nothing), compiled in place keeps the
model's state-dict keys and outputs, and the config/CLI switch reaches training, evaluation and the second stage."""
from __future__ import annotations

import pytest
import torch
import torch._dynamo

from lowres import build_model
from lowres.config import load_config
from lowres.models import compile_model


def _tiny(stem: int):
    torch.manual_seed(0)
    return build_model(stem, 5, width=0.1, min_depth=8)


@pytest.mark.parametrize("stem,training", [(79, False), (79, True), (299, True)])
def test_forward_is_one_graph(stem: int, training: bool) -> None:
    model = _tiny(stem).train(training)
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(model)(torch.randn(2, 3, stem, stem))
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1, explanation.break_reasons


def test_the_input_check_still_names_the_smallest_size() -> None:
    model = _tiny(79).eval()
    with pytest.raises(ValueError, match=r"input 20x20 is too small for stem 79: inference needs at least 21x21"):
        model(torch.randn(1, 3, 20, 20))
    with pytest.raises(ValueError, match=r"training with the auxiliary head needs at least 77x77"):
        model.train()(torch.randn(2, 3, 76, 76))


def test_compiled_in_place_keeps_keys_and_outputs() -> None:
    model = _tiny(79).eval()
    keys = list(model.state_dict())
    x = torch.randn(3, 3, 79, 79)
    with torch.no_grad():
        eager = model(x)
        torch._dynamo.reset()
        compiled = compile_model(model, True, backend="eager", fullgraph=True)  # dynamo's graph, run eagerly
        assert compiled is model and list(model.state_dict()) == keys  # checkpoints and EMA see the same model
        assert torch.allclose(model(x), eager, atol=1e-6)
    assert compile_model(_tiny(79), False)._compiled_call_impl is None  # off: untouched


def test_compile_switch_in_config_and_cli(tmp_path) -> None:
    from click.testing import CliRunner

    from lowres.cli import main

    assert load_config("smoke").train.compile is False
    assert load_config("smoke", ["train.compile=true"]).train.compile is True
    result = CliRunner().invoke(main, ["train", "--config", "smoke", "--compile", "--print-config"])
    assert result.exit_code == 0 and "compile: true" in result.output
    for command in ("eval", "rescore"):
        assert "--compile" in CliRunner().invoke(main, [command, "--help"]).output
