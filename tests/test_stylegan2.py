"""StyleGAN2 generators in the layout of rosinality's stylegan2-pytorch checkpoints, with random weights."""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from gandissect.causal.cut import Cut
from gandissect.core.errors import ConfigError
from gandissect.core.hooks import Trace, display_layers, layer_shapes
from gandissect.core.sampling import sample_z
from gandissect.core.segmenters import ColorSegmenter
from gandissect.dissection import DissectConfig, Dissector
from gandissect.engine.runfolder import fingerprint
from gandissect.models import default_layers_for, loaders, resolve_generator
from gandissect.models.progan import ProGANGenerator
from gandissect.models.stylegan2 import StyleGAN2Generator, load_stylegan2, published_checkpoint, to_published

CHANNELS = {4: 32, 8: 32, 16: 16, 32: 16}
ARGS = argparse.Namespace(size=32, latent=64, n_mlp=2, channel_multiplier=2, path="lmdb/church", iter=800000)


def tiny(seed: int = 0) -> StyleGAN2Generator:
    """A 32x32 generator (style_dim 64, 2 mapping layers) with random biases and noise strengths (the port
    initialises them at zero, which would hide them) and to-RGB weights scaled down, so that its raw images
    stay within [-1, 1] give or take the dissector's tolerance."""
    torch.manual_seed(seed)
    generator = StyleGAN2Generator(32, style_dim=64, n_mlp=2, channels=CHANNELS).eval()
    with torch.no_grad():
        for name, parameter in generator.named_parameters():
            if name.startswith("rgb") and name.endswith(".conv.weight"):
                parameter.mul_(0.1)
            elif name.endswith(("activate.bias", "noise.weight")) or re.fullmatch(r"mapping\.fc\d\.bias", name):
                parameter.normal_(0, 0.3)
    generator.estimate_w_avg()
    return generator


@pytest.fixture(scope="module")
def gen() -> StyleGAN2Generator:
    return tiny()


@pytest.fixture(scope="module")
def z() -> torch.Tensor:
    return torch.randn(3, 64, generator=torch.Generator().manual_seed(7))


@pytest.fixture(scope="module")
def checkpoint(gen, tmp_path_factory):
    """A training checkpoint as the port's train.py writes it (no latent_avg: the loader estimates it)."""
    path = tmp_path_factory.mktemp("stylegan2") / "stylegan2-church-config-f.pt"
    state = to_published(gen)
    critic = torch.nn.Linear(4, 1)
    optimiser = torch.optim.Adam(critic.parameters(), lr=0.002, betas=(0.0, 0.99))
    critic(torch.ones(2, 4)).sum().backward()
    optimiser.step()  # an optimiser state holds ints, tuples, None and tensors, as the port's g_optim and d_optim
    torch.save({"g": state, "d": critic.state_dict(), "g_ema": state, "g_optim": optimiser.state_dict(),
                "d_optim": optimiser.state_dict(), "args": ARGS, "ada_aug_p": 0.0}, path)
    return path


def published_keys() -> list[str]:
    """The g_ema keys of the port's Generator(32, 64, n_mlp=2), written out by hand."""
    def styled(prefix: str, upsample: bool) -> list[str]:
        return [f"{prefix}.conv.weight", f"{prefix}.conv.modulation.weight", f"{prefix}.conv.modulation.bias",
                f"{prefix}.noise.weight", f"{prefix}.activate.bias"] + ([f"{prefix}.conv.blur.kernel"] * upsample)

    def rgb(prefix: str, upsample: bool) -> list[str]:
        return [f"{prefix}.bias", f"{prefix}.conv.weight", f"{prefix}.conv.modulation.weight",
                f"{prefix}.conv.modulation.bias"] + ([f"{prefix}.upsample.kernel"] * upsample)

    keys = ["style.1.weight", "style.1.bias", "style.2.weight", "style.2.bias", "input.input"]
    keys += styled("conv1", False) + rgb("to_rgb1", False) + [f"noises.noise_{i}" for i in range(7)]
    for j in range(3):
        keys += styled(f"convs.{2 * j}", True) + styled(f"convs.{2 * j + 1}", False) + rgb(f"to_rgbs.{j}", True)
    return sorted(keys)


def test_checkpoint_in_the_published_layout_reloads_to_identical_outputs(gen, z, checkpoint, tmp_path):
    state = to_published(gen)
    assert sorted(state) == published_keys()
    assert state["convs.2.conv.weight"].shape == (1, 16, 32, 3, 3) and state["noises.noise_6"].shape == (1, 1, 32, 32)
    assert torch.equal(state["convs.0.conv.blur.kernel"], torch.tensor([[1., 3, 3, 1], [3, 9, 9, 3], [3, 9, 9, 3],
                                                                        [1, 3, 3, 1]]) / 16)
    loaded = resolve_generator(f"stylegan2:{checkpoint},truncation=0.7")
    assert not loaded.training and (loaded.size, loaded.style_dim, loaded.n_mlp) == (32, 64, 2)
    assert loaded.channels == CHANNELS and loaded.truncation == 0.7
    assert torch.equal(loaded.truncate.w_avg, gen.truncate.w_avg)  # estimated again from the same seeded z
    reference = tiny().configure(truncation=0.7)
    with torch.no_grad():
        assert torch.equal(loaded(z), reference(z))
    torch.save(published_checkpoint(gen), tmp_path / "converted.pt")  # g_ema and latent_avg
    torch.save(state, tmp_path / "bare.pt")
    for path in (tmp_path / "converted.pt", tmp_path / "bare.pt"):
        with torch.no_grad():
            assert torch.equal(load_stylegan2(path)(z), gen(z)), path
    stored = dict(published_checkpoint(gen), latent_avg=torch.ones(64))
    assert torch.equal(load_stylegan2(stored).truncate.w_avg, torch.ones(64))


def test_truncation_pulls_toward_the_checkpoints_latent_avg_and_says_which_mean(gen, z, tmp_path, capsys):
    stored = gen.truncate.w_avg + torch.randn(64, generator=torch.Generator().manual_seed(5))  # not the estimate
    torch.save(dict(published_checkpoint(gen), latent_avg=stored), tmp_path / "converted.pt")
    loaded = resolve_generator(f"stylegan2:{tmp_path / 'converted.pt'},truncation=0.5")
    assert loaded.w_avg_source == "the checkpoint's latent_avg" == loaded.checkpoint["w_avg"]
    assert "stylegan2: mean w for truncation: the checkpoint's latent_avg" in capsys.readouterr().err
    estimated = load_stylegan2(to_published(gen), truncation=0.5)  # a bare g_ema: no latent_avg
    assert estimated.w_avg_source.startswith("estimated: the mean w of 4096 z drawn with seed 0")
    with torch.no_grad():  # the reference: truncation by hand toward the stored mean, then synthesis from that w
        w = gen.mapping(z)
        reference = tiny().configure(space="w")(stored + 0.5 * (w - stored))
        torch.testing.assert_close(loaded(z), reference, rtol=0, atol=1e-6)
        assert (estimated(z) - reference).abs().max() > 1e-2


def test_images_have_the_size_and_range(gen, z):
    with torch.no_grad():
        clamped = gen(z)
        raw = load_stylegan2(published_checkpoint(gen), clamp=False)(z)
        wide = load_stylegan2(published_checkpoint(gen), clamp=False)
        for name, parameter in wide.named_parameters():
            if name.startswith("rgb") and name.endswith("conv.weight"):
                parameter.mul_(100)
        wide_raw = wide(z)
        wide_clamped = wide.configure(clamp=True)(z)
    assert clamped.shape == (3, 3, 32, 32) and torch.isfinite(clamped).all()
    assert raw.abs().max() < 2 and raw.std() > 0.1 and torch.equal(clamped, raw.clamp(-1, 1))
    assert wide_raw.abs().max() > 2 and wide_clamped.abs().max() == 1
    assert StyleGAN2Generator.output_range == (-1, 1) and gen.z_dim == 64
    with torch.no_grad():
        assert torch.equal(gen(z[:, :, None, None]), clamped)
    with pytest.raises(ConfigError, match=r"takes z of shape \(batch, 64\); got \(3, 512\)"):
        gen(torch.randn(3, 512))


def test_layers_are_listed_with_their_shapes(gen, z):
    assert display_layers(gen) == ["mapping", "truncate", "const", "layer1", "rgb4", "layer2", "layer3", "rgb8",
                                   "layer4", "layer5", "rgb16", "layer6", "layer7", "rgb32"]
    shapes = layer_shapes(gen, z[:1])
    top = {name: shape for name, shape in shapes.items() if "." not in name}
    assert top == {"mapping": (64,), "truncate": (64,), "const": (32, 4, 4), "layer1": (32, 4, 4), "rgb4": (3, 4, 4),
                   "layer2": (32, 8, 8), "layer3": (32, 8, 8), "rgb8": (3, 8, 8), "layer4": (16, 16, 16),
                   "layer5": (16, 16, 16), "rgb16": (3, 16, 16), "layer6": (16, 32, 32), "layer7": (16, 32, 32),
                   "rgb32": (3, 32, 32)}
    assert shapes["layer2.conv.modulation"] == (32,) and shapes["layer2.conv.blur"] == (32, 8, 8)
    assert gen.layer_names == [f"layer{i}" for i in range(1, 8)] and gen.default_layers == ["layer1", "layer3"]


def _modulated(x: torch.Tensor, conv, w: torch.Tensor, demodulate: bool, **conv_args) -> torch.Tensor:
    """StyleGAN2's modulated conv written per sample: weight W / sqrt(fan_in) * s, divided by its norm per output
    channel, convolved with that sample alone (transposed and stride 2 when upsampling)."""
    out = []
    fan_in = conv.weight[0, 0].numel()
    styles = w @ conv.modulation.weight.t() / math.sqrt(w.shape[1]) + conv.modulation.bias
    for sample, style in zip(x, styles, strict=True):
        weight = conv.weight[0] / math.sqrt(fan_in) * style[None, :, None, None]
        if demodulate:
            weight = weight / weight.pow(2).sum((1, 2, 3), keepdim=True).add(1e-8).sqrt()
        if conv_args.get("stride") == 2:
            out.append(F.conv_transpose2d(sample[None], weight.transpose(0, 1), stride=2))
        else:
            out.append(F.conv2d(sample[None], weight, **conv_args))
    return torch.cat(out)


def _binomial_upsample(x: torch.Tensor) -> torch.Tensor:
    """2x upsampling with the [1, 3, 3, 1] filter, as a strided transposed conv (gain 4)."""
    taps = torch.tensor([1.0, 3, 3, 1])
    kernel = (taps[:, None] * taps[None, :] / 16).expand(x.shape[1], 1, 4, 4)
    return F.conv_transpose2d(x, kernel, stride=2, padding=1, groups=x.shape[1])


def _activate(x: torch.Tensor, layer) -> torch.Tensor:
    noisy = x + layer.noise.weight * layer.noise.fixed
    return F.leaky_relu(noisy + layer.activate.bias[None, :, None, None], 0.2) * math.sqrt(2)


def test_synthesis_follows_stylegan2s_formulas(gen, z):
    names = ["truncate", "const", "layer1", "rgb4", "layer2", "layer3", "rgb8"]
    with torch.no_grad(), Trace(gen, names) as trace:
        gen(z)
        w = trace["truncate"]
        mapped = z / z.pow(2).mean(1, keepdim=True).add(1e-8).sqrt()
        for fc in gen.mapping.children():  # lr_mul 0.01 on weight and bias
            mapped = F.leaky_relu(mapped @ (fc.weight.t() * 0.01 / 8) + fc.bias * 0.01, 0.2) * math.sqrt(2)
        torch.testing.assert_close(w, mapped)
        layer1 = _activate(_modulated(trace["const"], gen.layer1.conv, w, True, padding=1), gen.layer1)
        torch.testing.assert_close(trace["layer1"], layer1, rtol=1e-4, atol=1e-5)
        rgb4 = _modulated(layer1, gen.rgb4.conv, w, False) + gen.rgb4.bias
        torch.testing.assert_close(trace["rgb4"], rgb4, rtol=1e-4, atol=1e-5)
        up = _modulated(layer1, gen.layer2.conv, w, True, stride=2)  # (2H + 1)^2, then the blur with padding 1
        taps = torch.tensor([1.0, 3, 3, 1])
        blur = (taps[:, None] * taps[None, :] / 16).expand(up.shape[1], 1, 4, 4)
        layer2 = _activate(F.conv2d(F.pad(up, (1, 1, 1, 1)), blur, groups=up.shape[1]), gen.layer2)
        torch.testing.assert_close(trace["layer2"], layer2, rtol=1e-4, atol=1e-5)
        rgb8 = _modulated(trace["layer3"], gen.rgb8.conv, w, False) + gen.rgb8.bias + _binomial_upsample(rgb4)
        torch.testing.assert_close(trace["rgb8"], rgb8, rtol=1e-4, atol=1e-5)


def test_a_256_model_has_13_layers_and_takes_layer5_and_layer7_by_default():
    generator = StyleGAN2Generator(256, channels={r: 4 for r in (4, 8, 16, 32, 64, 128, 256)}).eval()
    shapes = layer_shapes(generator, torch.randn(1, 512))
    assert [shapes[f"layer{i}"][1] for i in range(1, 14)] == [4, 8, 8, 16, 16, 32, 32, 64, 64, 128, 128, 256, 256]
    assert shapes["rgb256"] == (3, 256, 256) and generator.default_layers == ["layer5", "layer7"]
    full = StyleGAN2Generator(256)  # the port's channels for channel_multiplier 2
    assert [full.channels[r] for r in (4, 8, 16, 32, 64, 128, 256)] == [512, 512, 512, 512, 512, 256, 128]
    assert full.layer8.conv.weight.shape == (1, 512, 512, 3, 3)
    assert full.layer12.conv.weight.shape == (1, 128, 256, 3, 3) and full.n_latent == 14
    huge = StyleGAN2Generator(1024, channels={2 ** k: 1 for k in range(2, 11)})
    assert huge.default_layers == ["layer9", "layer11"] and huge.last_layer_at(1024) == "layer17"


def test_sampling_is_seeded_and_prefix_stable_in_z_and_w(gen):
    w_gen = load_stylegan2(published_checkpoint(gen), space="w", truncation=0.5)
    for generator in (gen, w_gen):
        many = sample_z(generator, 3, range(70))
        assert torch.equal(sample_z(generator, 3, range(5)), many[:5])
        assert torch.equal(sample_z(generator, 3, [66, 2]), many[[66, 2]])
        assert not torch.equal(sample_z(generator, 4, range(5)), many[:5])
    z = sample_z(gen, 3, range(5))
    z_gen = load_stylegan2(published_checkpoint(gen), truncation=0.5)
    with torch.no_grad():
        torch.testing.assert_close(sample_z(w_gen, 3, range(5)), w_gen.map_to_w(z))
        torch.testing.assert_close(w_gen(sample_z(w_gen, 3, range(5))), z_gen(z))


def test_truncation_changes_images_and_the_fingerprint(gen, z):
    half = load_stylegan2(published_checkpoint(gen), truncation=0.5)
    none = load_stylegan2(published_checkpoint(gen), truncation=1.0)
    zero = load_stylegan2(published_checkpoint(gen), truncation=0.0)
    with torch.no_grad():
        assert torch.equal(none(z), gen(z)) and not torch.allclose(half(z), none(z))
        average = zero(z)  # psi 0: every z draws the image of w_avg
        assert torch.allclose(average, average[:1].expand_as(average), atol=1e-6)
        w = gen.mapping(z)
        torch.testing.assert_close(half.truncate(w), gen.truncate.w_avg + 0.5 * (w - gen.truncate.w_avg))
    prints = {fingerprint(g)["sha256"] for g in (half, none, zero)}
    prints |= {fingerprint(load_stylegan2(published_checkpoint(gen), **option))["sha256"]
               for option in ({"noise": "zero"}, {"space": "w"}, {"clamp": False})}
    assert len(prints) == 6 and fingerprint(none) == fingerprint(gen)
    for bad, message in (({"truncation": 1.5}, "from 0 to 1"), ({"noise": "pink"}, "fixed, random, zero"),
                         ({"space": "s"}, "z, w")):
        with pytest.raises(ConfigError, match=message):
            load_stylegan2(published_checkpoint(gen), **bad)


def test_noise_modes(gen, z):
    modes = {mode: load_stylegan2(published_checkpoint(gen), noise=mode) for mode in ("fixed", "random", "zero")}
    with torch.no_grad():
        images = {mode: generator(z) for mode, generator in modes.items()}
        assert torch.equal(modes["fixed"](z), images["fixed"]) and torch.equal(images["fixed"], gen(z))
        assert torch.equal(modes["random"](z), images["random"])  # seeded by each sample's latent
        torch.testing.assert_close(modes["random"](z[1:2]), images["random"][1:2])  # whatever the batch
        noises = modes["random"].noise_inputs(z)
        with Trace(modes["zero"], ["layer3.noise"]) as trace:
            modes["zero"](z)
    assert not torch.equal(noises[6][0], noises[6][1]) and noises[6].shape == (3, 1, 32, 32)
    assert len({images[mode].sum().item() for mode in images}) == 3
    assert (images["random"] - images["fixed"]).abs().max() > 1e-3
    assert trace["layer3.noise"].shape == (3, 32, 8, 8)


def test_w_space_generator_takes_w_and_w_per_layer(gen, z):
    w_gen = load_stylegan2(published_checkpoint(gen), space="w")
    with torch.no_grad():
        w = gen.map_to_w(z)
        assert torch.equal(w_gen(w), gen(z))
        per_layer = w[:, None, :].repeat(1, w_gen.n_latent, 1)
        assert torch.equal(w_gen(per_layer), gen(z))
        per_layer[:, 6:] = w.flip(0)[:, None, :]  # style mixing: coarse from one w, fine from another
        mixed = w_gen(per_layer)
        assert not torch.allclose(mixed, gen(z))
    with pytest.raises(ConfigError, match=r"w per layer \(8, 64\)"):
        w_gen(torch.randn(2, 3, 64))


def test_each_per_layer_style_drives_the_layers_the_port_gives_it(gen, z):
    """Style k drives layer{k + 1} and the to-RGB after layer k: the first module it changes is that one."""
    w_gen = load_stylegan2(published_checkpoint(gen), space="w")
    order = ["layer1", "rgb4", "layer2", "layer3", "rgb8", "layer4", "layer5", "rgb16", "layer6", "layer7", "rgb32"]
    with torch.no_grad():
        styles = gen.map_to_w(z)[:, None, :].repeat(1, w_gen.n_latent, 1)
        with Trace(w_gen, order) as trace:
            w_gen(styles)
        before = dict(trace.outputs)
        first_changed = []
        for index in range(w_gen.n_latent):
            changed = styles.clone()
            changed[:, index] += 1.0
            with Trace(w_gen, order) as trace:
                w_gen(changed)
            first_changed.append(next(name for name in order if not torch.equal(trace[name], before[name])))
    assert first_changed == ["layer1", "rgb4", "layer3", "rgb8", "layer5", "rgb16", "layer7", "rgb32"]


def test_cut_continues_from_a_layer_and_edits_reach_the_image(gen, z):
    with torch.no_grad():
        full = gen(z)
        for layer in ("layer2", "layer3", "layer6"):
            cut = Cut(gen, layer)
            features = cut.head(z)
            assert torch.equal(cut.tail(features, z), full), layer
        cut = Cut(gen, "layer3")
        features = cut.head(z)
        ablated = cut.tail(torch.zeros_like(features), z)
    assert (ablated - full).abs().max() > 1e-3


def test_channels_last_leaves_the_5d_modulated_weights_and_the_images(gen, z):
    from gandissect.engine.speed import channels_last

    faster = tiny()
    channels_last(faster)
    assert faster.layer3.conv.weight.dim() == 5 and faster.const.input.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(faster(z), gen(z), rtol=0, atol=1e-5)


def test_tiny_dissection_of_layer5(gen, tmp_path):
    config = DissectConfig(layers=["layer5"], samples=8, batch_size=4)
    dissector = Dissector(gen, ColorSegmenter(), config, tmp_path, progress=False)
    dissector.finish(dissector.run())
    document = json.loads((tmp_path / "dissect.json").read_text())
    assert list(document["layers"]) == ["layer5"] and document["layers"]["layer5"]["shape"] == [16, 16, 16]
    assert len(document["layers"]["layer5"]["units"]) == 16


def test_cli_dissects_a_checkpoint_with_its_options(checkpoint, tmp_path):
    out = tmp_path / "run"
    spec = f"stylegan2:{checkpoint},truncation=0.7,noise=random,resolution=32"
    done = subprocess.run([sys.executable, "-m", "gandissect.cli", "dissect", "--model", spec, "--segmenter", "color",
                           "--layers", "layer3,layer5", "--samples", "16", "--batch-size", "8", "--no-report",
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    document = json.loads((out / "dissect.json").read_text())
    assert list(document["layers"]) == ["layer3", "layer5"] and document["layers"]["layer3"]["shape"] == [32, 8, 8]
    assert document["model_checkpoint"]["path"] == str(checkpoint)
    assert document["model_checkpoint"]["w_avg"].startswith("estimated: the mean w of 4096 z")
    assert default_layers_for(spec, resolve_generator(spec)) == ["layer1", "layer3"]


def test_two_ranks_dissect_a_stylegan2_like_one_process(tmp_path):
    from test_distributed import dissect_on_two_ranks_like_one

    document = dissect_on_two_ranks_like_one(tmp_path, "--stylegan2", "StyleGAN2")
    assert list(document["layers"]) == ["layer5"] and len(document["layers"]["layer5"]["units"]) == 16


def test_a_progan_checkpoint_is_refused_naming_keys_and_what_it_holds(tmp_path):
    torch.manual_seed(0)
    state = ProGANGenerator(8, channels={4: 16, 8: 16}).state_dict()
    torch.save({k: v for k, v in state.items() if k != "clamp_images"}, tmp_path / "progan.pth")
    with pytest.raises(ConfigError) as caught:
        resolve_generator(f"stylegan2:{tmp_path / 'progan.pth'}")
    message = str(caught.value)
    assert "not a StyleGAN2 generator" in message
    assert "missing keys style.1.weight, input.input, conv1.conv.weight, to_rgb1.conv.weight" in message
    assert "unexpected keys layer1.conv.weight, layer1.wscale.b" in message
    assert "layer1.conv.weight (16, 512, 4, 4)" in message and "load it with progan:FILE" in message
    torch.save({"g": {}, "d": {}, "args": ARGS}, tmp_path / "no_ema.pt")
    with pytest.raises(ConfigError, match=r"'g' but no 'g_ema'.*dict with keys g, d, args"):
        load_stylegan2(tmp_path / "no_ema.pt")


def test_resolution_options_and_damaged_checkpoints_are_refused(gen, checkpoint, tmp_path):
    with pytest.raises(ConfigError, match="holds a 32x32 StyleGAN2, not the 64x64 asked for"):
        resolve_generator(f"stylegan2:{checkpoint},resolution=64")
    with pytest.raises(ConfigError, match=r"no option 'psi'.*truncation"):
        resolve_generator(f"stylegan2:{checkpoint},psi=0.7")
    with pytest.raises(ConfigError, match="truncation='strong' is not a number"):
        resolve_generator(f"stylegan2:{checkpoint},truncation=strong")
    with pytest.raises(ConfigError, match="clamp='maybe': choose yes or no"):
        resolve_generator(f"stylegan2:{checkpoint},clamp=maybe")
    with pytest.raises(ConfigError, match=r"no stylegan2 checkpoint at .*absent\.pt"):
        resolve_generator(f"stylegan2:{tmp_path / 'absent.pt'}")
    with pytest.raises(ConfigError, match=r"not in the cache.*stylegan2-horse-config-f\.pt"):
        resolve_generator("stylegan2:horse")
    state = to_published(gen)
    damaged = {k: v for k, v in state.items() if not k.startswith("convs.3.")} | {"extra.weight": torch.zeros(1)}
    with pytest.raises(ConfigError) as caught:
        load_stylegan2(damaged)
    message = str(caught.value)
    assert "missing keys convs.3.conv.weight, convs.3.conv.modulation.weight" in message
    assert "unexpected keys extra.weight" in message
    narrow = dict(state, **{"convs.5.activate.bias": torch.zeros(8)})
    with pytest.raises(ConfigError, match=r"convs.5.activate.bias \(8,\) \(expected \(16,\)\)"):
        load_stylegan2(narrow)
    with pytest.raises(ConfigError, match=r"style.1.weight has shape \(64,\); .* 2 dimensions"):
        load_stylegan2(dict(state, **{"style.1.weight": torch.zeros(64)}))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match=r"junk\.pt is not a PyTorch checkpoint.*starts with b'not a checkpoint'"):
        load_stylegan2(tmp_path / "junk.pt")


def test_loader_declares_its_options_and_known_files():
    loader = loaders.get_loader("stylegan2")
    assert set(loader.options) == {"truncation", "noise", "space", "clamp", "resolution"}
    assert {k.filename for k in loader.known} >= {"stylegan2-ffhq-config-f.pt", "stylegan2-church-config-f.pt"}
    assert loader.example.startswith("gandissect dissect --model stylegan2:")
