"""Layer hooks (retain, edit, stop, clean-up, tuple outputs, in-place safety), the default layer listing, and
seeded latent sampling."""

from __future__ import annotations

import re
from collections import namedtuple

import pytest
import torch
from torch import nn

from gandissect.core.edits import UnitEdit
from gandissect.core.errors import GandissectError, ShapeError
from gandissect.core.hooks import Trace, UnknownLayerError, display_layers, layer_names, layer_shapes
from gandissect.core.sampling import sample_z
from gandissect.models.scenegan import SceneGenerator


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.block = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 6))
        self.head = nn.Sequential(nn.Sequential(nn.Linear(6, 3)), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(x))


def _all_hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


@pytest.fixture
def net() -> Net:
    return Net()


def test_trace_retains_the_outputs_of_nested_layers(net):
    x = torch.randn(7, 4)
    with Trace(net, ["block.0", "head.0.0", "block"]) as trace:
        out = net(x)
    assert torch.equal(trace["block.0"], net.block[0](x))
    assert torch.equal(trace["block"], net.block(x))
    assert torch.equal(trace["head.0.0"], net.head[0][0](net.block(x)))
    assert torch.equal(out, net(x))
    assert not trace["block.0"].requires_grad
    with pytest.raises(KeyError, match=re.escape("block.1")):
        trace["block.1"]


def test_trace_without_detach_keeps_the_graph(net):
    with Trace(net, ["block.2"], detach=False) as trace:
        net(torch.randn(2, 4))
    trace["block.2"].sum().backward()
    assert net.block[0].weight.grad is not None


def test_edit_replaces_a_layer_output(net):
    x = torch.randn(3, 4)
    with Trace(net, ["block.1"], edit={"block.1": torch.zeros_like}) as trace:
        edited = net(x)
    expected = net.head(net.block[2](torch.zeros(3, 5)))
    assert torch.allclose(edited, expected)
    assert torch.equal(trace["block.1"], torch.zeros(3, 5))  # the retained output is the edited one
    assert not torch.allclose(net(x), expected)  # and the edit is gone after the context


def test_hooks_are_removed_on_exit_also_after_an_error(net):
    with Trace(net, ["block.0"], edit={"head.1": lambda t: t}):
        assert _all_hooks(net) == 2
    assert _all_hooks(net) == 0
    with pytest.raises(RuntimeError, match="boom"), Trace(net, ["block.0", "head"]):
        net(torch.randn(1, 4))
        raise RuntimeError("boom")
    assert _all_hooks(net) == 0
    with pytest.raises(RuntimeError), Trace(net, ["block.0"]):
        net(torch.randn(1, 5))  # wrong input width fails inside the forward pass
    assert _all_hooks(net) == 0


def test_stop_ends_the_forward_pass_early(net):
    calls = []
    spy = net.head.register_forward_hook(lambda *args: calls.append(1))
    reached_end = False
    try:
        with Trace(net, ["block.0"], stop=True) as trace:
            net(torch.randn(2, 4))
            reached_end = True
        assert trace["block.0"].shape == (2, 5)
        assert calls == [] and not reached_end
        net(torch.randn(2, 4))
        assert calls == [1]
    finally:
        spy.remove()
    assert _all_hooks(net) == 0


def test_unknown_layer_lists_the_existing_ones(net):
    with pytest.raises(UnknownLayerError) as info:
        Trace(net, ["block.7"])
    message = str(info.value)
    assert "block.7" in message
    for name in ("block", "block.0", "block.2", "head.0.0", "head.1"):
        assert name in message
    assert isinstance(info.value, KeyError)
    assert layer_names(net) == ["block", "block.0", "block.1", "block.2", "head", "head.0", "head.0.0", "head.1"]
    with pytest.raises(UnknownLayerError):
        Trace(net, edit={"nope": torch.zeros_like})


def test_layer_shapes_of_the_scene_generator():
    generator = SceneGenerator().eval()
    shapes = layer_shapes(generator, torch.zeros(1, generator.z_dim))
    expected = [(256, 4, 4), (128, 8, 8), (64, 16, 16), (32, 32, 32), (3, 64, 64)]
    assert [shapes[name] for name in generator.layer_names] == expected
    assert shapes["layer2.1"] == (128, 8, 8)  # the convolution inside layer2
    assert _all_hooks(generator) == 0


def test_edit_callables_take_the_layer_name_when_they_have_two_parameters(net):
    x = torch.randn(3, 4)
    seen = []

    def named(output: torch.Tensor, layer: str) -> torch.Tensor:
        seen.append(layer)
        return output + 1

    with Trace(net, ["block.1", "block.2"], edit={"block.1": named, "block.2": lambda t: t * 0}) as trace:
        net(x)
    assert seen == ["block.1"]
    assert torch.equal(trace["block.1"], net.block[1](net.block[0](x)) + 1)
    assert torch.equal(trace["block.2"], torch.zeros(3, 6))


def test_a_list_of_edits_is_applied_in_order(net):
    x = torch.randn(3, 4)
    plus_one, double = (lambda t: t + 1), (lambda t, layer: t * 2)
    with Trace(net, ["block.0"], edit={"block.0": [plus_one, double]}) as trace:
        net(x)
    assert torch.equal(trace["block.0"], (net.block[0](x) + 1) * 2)
    with Trace(net, ["block.0"], edit={"block.0": (double, UnitEdit.ablate([1]), plus_one)}) as trace:
        net(x)
    expected = net.block[0](x) * 2
    expected[:, 1] = 0
    assert torch.equal(trace["block.0"], expected + 1)


def test_the_model_is_unchanged_after_an_edit_also_after_an_error(net):
    x = torch.randn(5, 4)
    before = net(x)
    edit = {"block.1": UnitEdit.ablate([0, 2]), "head": lambda t: -t}
    with Trace(net, ["block.2"], edit=edit):
        assert not torch.equal(net(x), before)
    assert _all_hooks(net) == 0 and torch.equal(net(x), before)
    with pytest.raises(RuntimeError, match="boom"), Trace(net, ["block.2"], edit=edit):
        net(x)
        raise RuntimeError("boom")
    assert _all_hooks(net) == 0 and torch.equal(net(x), before)


class _Pair(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x * 2, x + 1


Split = namedtuple("Split", "low high")


class _Named(nn.Module):
    def forward(self, x: torch.Tensor) -> Split:
        return Split(x - 1, x + 1)


class _TupleNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pair = _Pair()
        self.named = _Named()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.pair(x)
        low, high = self.named(a * b)
        return low * high


def test_tuple_outputs_are_traced_through_the_selected_element():
    net, x = _TupleNet(), torch.randn(2, 3, 4, 4)
    edits = {"pair": UnitEdit.ablate([1]), "named": lambda t, layer: t * 3}
    with Trace(net, ["pair", "named"], edit=edits, select={"pair": 1, "named": 0}) as trace:
        out = net(x)
    b = x + 1
    b[:, 1] = 0
    assert torch.equal(trace["pair"], b)
    low = (x * 2 * b - 1) * 3
    assert torch.equal(trace["named"], low)
    assert torch.equal(out, low * (x * 2 * b + 1))
    assert layer_shapes(net, x) == {"pair": ((3, 4, 4), (3, 4, 4)), "named": ((3, 4, 4), (3, 4, 4))}


def test_a_tuple_output_without_select_is_one_clear_error():
    net = _TupleNet()
    with pytest.raises(ShapeError) as info, Trace(net, ["pair"]):
        net(torch.randn(1, 2))
    message = str(info.value)
    assert "'pair'" in message and "tuple of 2" in message and "select={'pair': index}" in message
    assert isinstance(info.value, GandissectError) and _all_hooks(net) == 0
    with pytest.raises(ShapeError, match="out of range"), Trace(net, ["pair"], select={"pair": 2}):
        net(torch.randn(1, 2))


@pytest.mark.parametrize("first", [nn.Linear(4, 6), nn.Conv2d(2, 6, 3, padding=1)])
def test_retained_outputs_are_immune_to_a_later_in_place_relu(first):
    torch.manual_seed(0)
    model = nn.Sequential(first, nn.ReLU(inplace=True), nn.Identity())
    x = torch.randn(3, 4) if isinstance(first, nn.Linear) else torch.randn(3, 2, 5, 5)
    pre_relu = first(x).detach()
    assert (pre_relu < 0).any()
    for stop in (False, True):
        with Trace(model, ["0"], stop=stop) as trace:
            model(x)
        assert torch.equal(trace["0"], pre_relu)
    with Trace(model, ["0", "2"], stop=True) as trace:  # "0" is not the last retained one: it must be a copy
        model(x)
    assert torch.equal(trace["0"], pre_relu) and torch.equal(trace["2"], pre_relu.clamp(min=0))
    with Trace(model, ["0"], detach=False) as trace:
        model(x)
    assert torch.equal(trace["0"], pre_relu)
    trace["0"].sum().backward()
    assert torch.equal(first.bias.grad, torch.full((6,), float(pre_relu[:, 0].numel())))  # d sum / d bias


def _dcgan() -> nn.Module:
    class DCGAN(nn.Module):
        z_dim = 8

        def __init__(self) -> None:
            super().__init__()
            self.main = nn.Sequential(
                nn.ConvTranspose2d(8, 16, 4, 1, 0, bias=False), nn.BatchNorm2d(16), nn.ReLU(True),
                nn.ConvTranspose2d(16, 8, 4, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(True),
                nn.ConvTranspose2d(8, 3, 4, 2, 1, bias=False), nn.Tanh(),
            )

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return self.main(z.reshape(len(z), 8, 1, 1))

    return DCGAN()


def test_display_layers_unwraps_containers_but_keeps_blocks():
    assert display_layers(_dcgan()) == [f"main.{i}" for i in range(8)]
    assert display_layers(SceneGenerator()) == ["layer1", "layer2", "layer3", "layer4", "output"]
    stacked = nn.Module()
    stacked.blocks = nn.ModuleList([nn.Sequential(nn.Linear(2, 2), nn.ReLU()), nn.ModuleDict({"a": nn.Tanh()})])
    stacked.to_rgb = nn.Linear(2, 3)
    assert display_layers(stacked) == ["blocks.0", "blocks.1.a", "to_rgb"]
    assert display_layers(nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.ReLU()))) == ["0", "1"]


def test_cli_layers_lists_the_leaves_of_a_sequential_model(tmp_path, capsys):
    from gandissect.cli import main

    factory = tmp_path / "dcgan.py"
    factory.write_text(
        "import torch\nfrom torch import nn\n\n\n"
        "class DCGAN(nn.Module):\n"
        "    z_dim = 8\n\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.main = nn.Sequential(nn.ConvTranspose2d(8, 16, 4, 1, 0), nn.BatchNorm2d(16), nn.ReLU(True),\n"
        "                                  nn.ConvTranspose2d(16, 3, 4, 2, 1), nn.Tanh())\n\n"
        "    def forward(self, z):\n"
        "        return self.main(z.reshape(len(z), 8, 1, 1))\n\n\n"
        "def make():\n"
        "    return DCGAN()\n"
    )
    assert main(["layers", "--model", f"{factory}:make"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    assert [row[:2] for row in rows] == [["main.0", "ConvTranspose2d"], ["main.1", "BatchNorm2d"], ["main.2", "ReLU"],
                                         ["main.3", "ConvTranspose2d"], ["main.4", "Tanh"]]
    assert " ".join(rows[0][2:]) == "(16, 4, 4)" and " ".join(rows[4][2:]) == "(3, 8, 8)"
    assert main(["layers", "--model", f"{factory}:make", "--all"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]]
    assert listed == ["main.0", "main.1", "main.2", "main.3", "main.4", "main"]


class _Latent(nn.Module):
    z_dim = 6


def test_sample_z_is_prefix_stable_and_seeded():
    generator = _Latent()
    small = sample_z(generator, 3, range(10))
    large = sample_z(generator, 3, range(300))
    assert small.shape == (10, 6) and large.shape == (300, 6)
    assert torch.equal(small, large[:10])
    picked = sample_z(generator, 3, torch.tensor([299, 5, 64, 63]))
    assert torch.equal(picked, large[[299, 5, 64, 63]])
    assert torch.equal(sample_z(generator, 3, range(100, 200)), large[100:200])
    other = sample_z(generator, 4, range(10))
    assert not torch.allclose(small, other)
    assert abs(float(large.mean())) < 0.1 and abs(float(large.std()) - 1) < 0.1


def test_sample_z_honours_z_shape_and_a_custom_sampler():
    shaped = nn.Module()
    shaped.z_shape = (2, 3)
    assert sample_z(shaped, 0, range(4)).shape == (4, 2, 3)

    class Custom(nn.Module):
        z_dim = 2

        def sample_z(self, seed, indices):
            return indices.float()[:, None].repeat(1, 2) + seed

    assert torch.equal(sample_z(Custom(), 10, range(3)), torch.tensor([[10.0, 10.0], [11.0, 11.0], [12.0, 12.0]]))


def test_sample_z_needs_a_latent_size():
    with pytest.raises(AttributeError, match="z_dim"):
        sample_z(nn.Linear(2, 2), 0, range(3))
