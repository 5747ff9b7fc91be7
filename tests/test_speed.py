"""`engine.speed.inference_copy`: batch norms folded into convolutions on a copy, the same function."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gandissect.core.hooks import Trace
from gandissect.engine.speed import inference_copy


def randomized(module: nn.Module, seed: int) -> nn.Module:
    """Batch norms with running statistics and affine parameters far from their defaults, in eval mode."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) * 3 + 0.1)
            if m.affine:
                m.weight.data.copy_(torch.randn(m.num_features, generator=g))
                m.bias.data.copy_(torch.randn(m.num_features, generator=g))
    return module.eval()


def network() -> nn.Module:
    torch.manual_seed(0)
    shared = nn.Conv2d(6, 6, 3, padding=1)
    return nn.Sequential(
        nn.Sequential(nn.ConvTranspose2d(4, 8, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU()),
        nn.Sequential(nn.Conv2d(8, 6, 3, padding=1), nn.BatchNorm2d(6, affine=False), nn.ReLU()),
        nn.Sequential(nn.Conv2d(6, 6, 3, padding=1, groups=3), nn.BatchNorm2d(6)),
        nn.Sequential(shared, nn.BatchNorm2d(6)),  # the shared convolution also runs without a batch norm
        shared,
        nn.Sequential(nn.Conv2d(6, 5, 1), nn.BatchNorm2d(5)),  # its convolution is traced: kept
    )


def test_folded_copy_computes_the_same_and_leaves_the_original_alone():
    model = randomized(network(), 1)
    before = {name: t.clone() for name, t in model.state_dict().items()}
    x = torch.randn(3, 4, 5, 5, generator=torch.Generator().manual_seed(2))
    copy = inference_copy(model, keep=["5.0"])
    folded = {name for name, m in copy.named_modules() if isinstance(m, nn.Identity)}
    assert folded == {"0.1", "1.1", "2.1"}  # not the shared convolution's, not the traced one's
    with torch.no_grad(), Trace(model, ["0", "5.0"]) as plain, Trace(copy, ["0", "5.0"]) as fast:
        expected, got = model(x), copy(x)
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-5)
    for layer in ("0", "5.0"):
        assert torch.allclose(fast[layer], plain[layer], rtol=1e-4, atol=1e-5), layer
    assert all(torch.equal(t, before[name]) for name, t in model.state_dict().items())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 5
    assert not any(p.requires_grad for p in copy.parameters())


def test_training_mode_and_hooked_batch_norms_are_not_folded():
    model = randomized(network(), 3)
    model[1].train()  # batch statistics: not an affine map
    model[2][1].register_forward_hook(lambda module, inputs, output: None)
    copy = inference_copy(model)
    assert isinstance(copy[1][1], nn.BatchNorm2d) and isinstance(copy[2][1], nn.BatchNorm2d)
    assert isinstance(copy[0][1], nn.Identity) and isinstance(copy[5][1], nn.Identity)


def test_what_is_not_a_module_or_cannot_be_copied_is_used_as_it_is():
    class Uncopyable(nn.Sequential):
        def __deepcopy__(self, memo):
            raise TypeError("no copies")

    model = randomized(Uncopyable(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)), 4)
    assert inference_copy(model) is model
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
    segmenter = object()
    assert inference_copy(segmenter) is segmenter


def test_allocator_settings_are_taken_by_glibc():
    import platform

    from gandissect.engine.speed import keep_freed_memory

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt is glibc's")
    assert keep_freed_memory() and keep_freed_memory(huge_blocks=True)
    assert torch.ones(64, 2**20).sum() == 64 * 2**20  # a block of 256 MiB still allocates, from the heap
