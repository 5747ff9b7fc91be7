"""Layer hooks (retain, edit, stop, clean-up) and seeded latent sampling."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from gandissect.core.hooks import Trace, UnknownLayerError, layer_names, layer_shapes
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
