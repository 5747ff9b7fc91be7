"""ProGAN generators in GAN Dissection's checkpoint layout, with random weights (no download): sizes read from
the file in netdissect's reference layout and the older one, clamping, and the tensors' formulas."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from gandissect.core.errors import ConfigError
from gandissect.core.hooks import Trace, layer_shapes
from gandissect.core.segmenters import ColorSegmenter
from gandissect.dissection import DissectConfig, Dissector
from gandissect.engine.runfolder import fingerprint
from gandissect.models import resolve_generator
from gandissect.models.progan import ProGANGenerator, convert_state_dict, default_channels, load_progan

NETDISSECT_SIZES = {8: [512, 512, 512], 16: [512, 512, 512, 512], 32: [512, 512, 512, 512, 256],
                    64: [512, 512, 512, 512, 256, 128], 128: [512, 512, 512, 512, 256, 128, 64],
                    256: [512, 512, 512, 512, 256, 128, 64, 32],
                    1024: [512, 512, 512, 512, 512, 256, 128, 64, 32, 16]}
"""netdissect/proggan.py's default `sizes` by resolution, copied from its source: [z, 4x4, 8x8, ...]."""


def _randomised(resolution: int, seed: int = 0, **keywords) -> ProGANGenerator:
    """A generator whose biases are random too (ProGAN initialises them at zero, which would hide them);
    unclamped unless asked, so that comparisons see every raw value."""
    torch.manual_seed(seed)
    generator = ProGANGenerator(resolution, **{"clamp": False} | keywords).eval()
    with torch.no_grad():
        for name, parameter in generator.named_parameters():
            if name.endswith("wscale.b"):
                parameter.normal_(0, 0.5)
    return generator


@pytest.fixture(scope="module")
def gen32() -> ProGANGenerator:
    return _randomised(32)


@pytest.fixture(scope="module")
def z() -> torch.Tensor:
    return torch.randn(2, 512, generator=torch.Generator().manual_seed(7))


def published(generator: ProGANGenerator) -> dict[str, torch.Tensor]:
    """The weights as netdissect saves them (the clamp option buffer left out)."""
    return {k: v for k, v in generator.state_dict().items() if k != "clamp_images"}


def reference_state(sizes: list[int], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors in the shapes netdissect's ProgressiveGenerator(sizes=sizes) has, by its construction
    rule written out here: layer1 (s1, s0, 4, 4), layer2 (s1, s1, 3, 3), then for each (si, so) an upsampling
    conv (so, si, 3, 3) and a conv (so, so, 3, 3), and the head (3, s_last, 1, 1); a bias per conv."""
    shapes = {"layer1": (sizes[1], sizes[0], 4, 4), "layer2": (sizes[1], sizes[1], 3, 3)}
    for si, so in itertools.pairwise(sizes[1:]):
        shapes[f"layer{len(shapes) + 1}"] = (so, si, 3, 3)
        shapes[f"layer{len(shapes) + 1}"] = (so, so, 3, 3)
    size = 4 * 2 ** (len(shapes) // 2 - 1)
    shapes[f"output_{size}x{size}"] = (3, sizes[-1], 1, 1)
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in shapes.items():
        state[f"{name}.conv.weight"] = torch.randn(shape, generator=generator)
        state[f"{name}.wscale.b"] = 0.5 * torch.randn(shape[0], generator=generator)
    return state


def _old_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The older key names, written out by hand: features.{i-1}.* for layer{i}.*, output.* for the head."""
    old = {}
    for key, value in state.items():
        block, rest = key.split(".", 1)
        if block.startswith("layer"):
            old[f"features.{int(block[len('layer'):]) - 1}.{rest}"] = value
        else:
            assert block.startswith("output_")
            old[f"output.{rest}"] = value
    return old


def test_published_and_old_layouts_reload_to_identical_outputs(gen32, z, tmp_path):
    state = published(gen32)
    assert sorted(state) == sorted([f"layer{i}.{p}" for i in range(1, 9) for p in ("conv.weight", "wscale.b")]
                                   + ["output_32x32.conv.weight", "output_32x32.wscale.b"])
    assert state["layer1.conv.weight"].shape == (512, 512, 4, 4)
    with torch.no_grad():
        expected = gen32(z)
    torch.save(state, tmp_path / "published.pth")
    old = _old_layout(state)
    torch.save({"state_dict": {f"module.{k}": v for k, v in old.items()}}, tmp_path / "old.pth")
    save_file({k: v.contiguous() for k, v in old.items()}, str(tmp_path / "old.safetensors"))
    assert convert_state_dict(old).keys() == state.keys()
    for source in (tmp_path / "published.pth", str(tmp_path / "old.pth"), tmp_path / "old.safetensors", old):
        loaded = load_progan(source, clamp=False)
        assert loaded.resolution == 32 and loaded.layer_names[-1] == "output_32x32" and not loaded.training
        with torch.no_grad():
            assert torch.equal(loaded(z), expected), source
    with torch.no_grad():  # the TensorFlow placement of pixel norm (end of each block) draws the same images
        netdissect_style = load_progan(state, pixel_norm="after", clamp=False)(z)
    torch.testing.assert_close(netdissect_style, expected, rtol=1e-4, atol=1e-4)


def test_images_have_the_resolution_and_are_clamped_by_default(gen32, z):
    with torch.no_grad():
        raw = gen32(z)
        same = gen32(z[:, :, None, None])
        clamped = load_progan(published(gen32))(z)
        loaded_raw = resolve_generator_from(published(gen32), "clamp=no")(z)
    assert raw.shape == (2, 3, 32, 32) and torch.isfinite(raw).all() and torch.equal(raw, same)
    assert raw.abs().max() > 2  # random weights overshoot [-1, 1] far
    assert torch.equal(clamped, raw.clamp(-1, 1)) and torch.equal(loaded_raw, raw)
    assert ProGANGenerator.output_range == (-1, 1) and gen32.z_dim == 512 and ProGANGenerator(8).clamp
    assert fingerprint(load_progan(published(gen32)))["sha256"] != fingerprint(gen32)["sha256"]
    with Trace(gen32, ["layer4"]) as trace, torch.no_grad():
        clamped_again = gen32.configure(clamp=True)(z)
    try:
        with torch.no_grad():
            assert torch.equal(gen32.forward_from("layer4", trace["layer4"]), clamped_again)
            assert torch.equal(clamped_again, clamped)
    finally:
        gen32.configure(clamp=False)
    with pytest.raises(ConfigError, match="z must have shape"):
        gen32(torch.randn(1, 100))


def resolve_generator_from(state: dict[str, torch.Tensor], options: str) -> ProGANGenerator:
    """The generator `progan:FILE,options` loads from `state` saved to a temporary file."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        torch.save(state, f"{folder}/g.pth")
        return resolve_generator(f"progan:{folder}/g.pth,{options}")


def _pixel_norm(x: torch.Tensor) -> torch.Tensor:
    return x / torch.sqrt(x.pow(2).mean(1, keepdim=True) + 1e-8)


def test_equalised_learning_rate_scales_stored_weights_by_the_he_constant(gen32, z):
    with torch.no_grad(), Trace(gen32, ["layer1.wscale", "layer2", "layer3.wscale", "layer8",
                                       "output_32x32"]) as trace:
        gen32(z)
    # layer1: the "dense" layer from pixel-normed z to 512 x 4x4, fan_in 512 * 4 * 4, as an explicit sum
    zn = z / z.pow(2).mean(1, keepdim=True).sqrt()
    w1 = gen32.layer1.conv.weight
    dense = torch.einsum("oiyx,ni->noyx", w1.flip(2, 3), zn) * math.sqrt(2 / (512 * 16))
    dense = dense + gen32.layer1.wscale.b.view(1, -1, 1, 1)
    torch.testing.assert_close(trace["layer1.wscale"], dense, rtol=1e-4, atol=1e-4)
    # layer3: nearest upsampling then a 3x3 conv with the weight scaled by sqrt(2 / (512 * 9)), then the bias
    up = _pixel_norm(trace["layer2"]).repeat_interleave(2, 2).repeat_interleave(2, 3)  # norm first, as netdissect
    w3 = gen32.layer3.conv.weight * math.sqrt(2 / (512 * 3 * 3))
    torch.testing.assert_close(trace["layer3.wscale"], F.conv2d(up, w3, gen32.layer3.wscale.b, padding=1),
                               rtol=1e-4, atol=1e-4)
    # to-RGB head: gain 1, i.e. 1 / sqrt(fan_in)
    head = gen32.output_32x32
    rgb = F.conv2d(_pixel_norm(trace["layer8"]), head.conv.weight / math.sqrt(256), head.wscale.b)
    torch.testing.assert_close(trace["output_32x32"], rgb, rtol=1e-4, atol=1e-4)


def test_every_layer_output_is_pixel_normalised(gen32, z):
    """With pixel norm at the end of each block (ProGAN's TensorFlow placement)."""
    after = load_progan(published(gen32), pixel_norm="after")
    layers = [f"layer{i}" for i in range(1, 9)]
    with torch.no_grad(), Trace(after, layers) as trace:
        after(z)
    for name in layers:
        mean_square = trace[name].pow(2).mean(dim=1)
        assert (mean_square - 1).abs().max() < 1e-5, name


def test_layer_shapes_and_forward_from(gen32, z):
    shapes = layer_shapes(gen32, z[:1])
    blocks = {name: shape for name, shape in shapes.items() if "." not in name}
    assert blocks == {"layer1": (512, 4, 4), "layer2": (512, 4, 4), "layer3": (512, 8, 8), "layer4": (512, 8, 8),
                      "layer5": (512, 16, 16), "layer6": (512, 16, 16), "layer7": (256, 32, 32),
                      "layer8": (256, 32, 32), "output_32x32": (3, 32, 32)}
    assert list(blocks) == gen32.layer_names
    for layer in ("layer1", "layer4", "layer7"):
        with torch.no_grad(), Trace(gen32, [layer]) as trace:
            full = gen32(z)
        with torch.no_grad():
            assert torch.equal(gen32.forward_from(layer, trace[layer]), full), layer
    with pytest.raises(ConfigError, match="not a layer"):
        gen32.forward_from("layer9", z)


def test_default_channels_are_netdissects():
    for resolution, sizes in NETDISSECT_SIZES.items():
        assert list(default_channels(resolution).values()) == sizes[1:], resolution
        assert sorted(default_channels(resolution)) == [4 * 2 ** i for i in range(len(sizes) - 1)]
    with pytest.raises(ConfigError, match="every resolution"):
        ProGANGenerator(16, channels={4: 8, 8: 8})


@pytest.mark.parametrize("layout", ["published", "old"])
def test_a_256_file_in_netdissects_reference_layout_loads_with_the_papers_layer_sizes(layout, tmp_path):
    state = reference_state(NETDISSECT_SIZES[256])
    saved = state if layout == "published" else _old_layout(state)
    torch.save(saved, tmp_path / "churchoutdoor_lsun.pth")
    generator = resolve_generator(f"progan:{tmp_path / 'churchoutdoor_lsun.pth'}")
    assert generator.layer_names == [f"layer{i}" for i in range(1, 15)] + ["output_256x256"]
    assert generator.channels == dict(zip([4, 8, 16, 32, 64, 128, 256], NETDISSECT_SIZES[256][1:], strict=True))
    shapes = layer_shapes(generator, torch.randn(1, 512, generator=torch.Generator().manual_seed(0)))
    assert [shapes[f"layer{i}"][0] for i in range(1, 15)] == [512] * 6 + [256, 256, 128, 128, 64, 64, 32, 32]
    # the paper's scripts dissect layer4 with 512 units, layer7 with 256 and layer10 with 128
    assert (shapes["layer4"], shapes["layer7"], shapes["layer10"]) == ((512, 8, 8), (256, 32, 32), (128, 64, 64))
    assert shapes["output_256x256"] == (3, 256, 256)
    for key, tensor in published(generator).items():
        assert torch.equal(tensor, state[key]), key
    plain = ProGANGenerator(256, clamp=False)  # PyTorch's own strict load takes the file too
    plain.load_state_dict(state)
    assert not plain.clamp and torch.equal(plain.layer7.conv.weight, state["layer7.conv.weight"])


CHANNELS = {"netdissect": {4: 512, 8: 512, 16: 512, 32: 256},
            "fmap_base 8192": {4: 512, 8: 512, 16: 512, 32: 512},
            "irregular": {4: 48, 8: 40, 16: 24, 32: 8}}


@pytest.mark.parametrize("layout", ["published", "old"])
@pytest.mark.parametrize("name", list(CHANNELS))
def test_channels_and_z_size_are_read_from_the_file(name, layout, tmp_path):
    z_dim = 20 if name == "irregular" else 512
    original = _randomised(32, z_dim=z_dim, channels=CHANNELS[name])
    state = published(original) if layout == "published" else _old_layout(published(original))
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "g.safetensors"))
    loaded = load_progan(tmp_path / "g.safetensors", clamp=False)
    assert (loaded.resolution, loaded.z_dim, loaded.channels) == (32, z_dim, CHANNELS[name])
    z = torch.randn(2, z_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(loaded(z), original(z))


def test_a_reference_layout_file_dissects_although_its_raw_images_overshoot(tmp_path):
    sizes = [64, 64, 48, 32]  # a 16x16 model in netdissect's layout (z of 64), raw images far beyond [-1, 1]
    generator = load_progan(reference_state(sizes))
    with torch.no_grad():
        raw = generator.configure(clamp=False)(torch.randn(4, 64, generator=torch.Generator().manual_seed(0)))
    assert raw.abs().max() > 1.5
    generator.configure(clamp=True)
    config = DissectConfig(layers=["layer4"], samples=8, batch_size=4)
    dissector = Dissector(generator, ColorSegmenter(), config, tmp_path, progress=False)
    dissector.finish(dissector.run())
    document = json.loads((tmp_path / "dissect.json").read_text())
    assert document["layers"]["layer4"]["shape"] == [48, 8, 8]


def test_tiny_dissection_of_layer4(gen32, tmp_path):
    # random weights draw images far beyond [-1, 1]: shrink the to-RGB weights to dissect raw images
    state = published(gen32)
    state["output_32x32.conv.weight"] = state["output_32x32.conv.weight"] * 0.2
    state["output_32x32.wscale.b"] = torch.zeros(3)
    generator = load_progan(state, clamp=False)
    config = DissectConfig(layers=["layer4"], samples=8, batch_size=4)
    dissector = Dissector(generator, ColorSegmenter(), config, tmp_path, progress=False)
    dissector.finish(dissector.run())
    document = json.loads((tmp_path / "dissect.json").read_text())
    assert list(document["layers"]) == ["layer4"]
    assert document["layers"]["layer4"]["shape"] == [512, 8, 8]
    assert len(document["layers"]["layer4"]["units"]) == 512


def test_another_architecture_is_refused_naming_keys(tmp_path):
    torch.save(torch.nn.Linear(5, 10).state_dict(), tmp_path / "linear.pth")
    with pytest.raises(ConfigError) as caught:
        load_progan(tmp_path / "linear.pth")
    message = str(caught.value)
    assert "missing keys" in message and "layer1.conv.weight" in message
    assert "unexpected keys weight, bias" in message and "(10, 5)" in message
    with pytest.raises(ConfigError, match="no ProGAN checkpoint"):
        load_progan(tmp_path / "absent.pth")


def test_wrong_resolution_and_damaged_checkpoints_are_refused(gen32):
    state = published(gen32)
    with pytest.raises(ConfigError, match="holds a 32x32 ProGAN, not the 64x64 asked for"):
        load_progan(state, resolution=64)
    assert load_progan(state, resolution=32).resolution == 32
    damaged = {k: v for k, v in state.items() if not k.startswith("layer5.")}
    damaged["extra.weight"] = torch.zeros(1)
    with pytest.raises(ConfigError) as caught:
        load_progan(damaged)
    message = str(caught.value)
    assert "missing keys layer5.conv.weight, layer5.wscale.b" in message and "unexpected keys extra.weight" in message
    narrow = dict(state, **{"layer8.wscale.b": torch.zeros(128)})
    with pytest.raises(ConfigError, match=r"channels \{4: 512, 8: 512, 16: 512, 32: 256\}.*"
                                          r"layer8.wscale.b \(128,\) \(expected \(256,\)\)"):
        load_progan(narrow)
    mismatched = dict(state, **{"layer8.conv.weight": torch.zeros(128, 128, 3, 3)})
    with pytest.raises(ConfigError, match=r"layer8.conv.weight \(128, 128, 3, 3\) \(expected \(256, 256, 3, 3\)\)"):
        load_progan(mismatched)
    with pytest.raises(ConfigError, match="power of two"):
        ProGANGenerator(48)


def test_stored_he_constants_of_older_files_are_checked_and_dropped(gen32, z):
    state = dict(published(gen32), **{"layer3.wscale.scale": torch.tensor(math.sqrt(2 / (512 * 9)))})
    with torch.no_grad():
        assert torch.equal(load_progan(state, clamp=False)(z), gen32(z))
    state["layer3.wscale.scale"] = torch.tensor(1.0)
    with pytest.raises(ConfigError, match=r"layer3\.wscale\.scale is 1"):
        load_progan(state)


def test_two_ranks_dissect_a_progan_like_one_process(tmp_path):
    from test_distributed import dissect_on_two_ranks_like_one

    document = dissect_on_two_ranks_like_one(tmp_path, "--progan", "ProGAN")
    assert list(document["layers"]) == ["layer4"] and len(document["layers"]["layer4"]["units"]) == 512
