"""The ade20k segmenter on small randomly initialised SegFormer and UperNet models (no download): label
mapping and categories, output shape, dtype and resolution, labels agreeing with the differentiable scores,
composition with the colour segmenter, a dissection end to end, and clear errors (the extra missing included)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from gandissect.cli import main
from gandissect.core.errors import ConfigError
from gandissect.core.segmenters import ColorSegmenter, MergedSegmenter, check_labels, check_segmenter
from gandissect.models import resolve_segmenter
from gandissect.models.ade20k import ADE20KSegmenter, concepts_for
from gandissect.models.loaders import describe_loader, get_loader

transformers = pytest.importorskip("transformers")

PLANTED = str(Path(__file__).parent / "planted.py") + ":PlantedGenerator"
SRC = str(Path(__file__).parent.parent / "src")
# Written out by hand from the published ADE20K list (objectInfo150), not read from gandissect.
EXPECTED_PARTS = {"window", "door", "screen door", "column", "railing", "bannister", "step", "base", "countertop"}
SPOT_CHECKS = {0: "wall", 1: "building", 2: "sky", 8: "window", 12: "person", 14: "door", 20: "car",
               89: "television", 127: "bicycle", 138: "trash can", 149: "flag"}
WINDOW, BUILDING = 8, 1


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    monkeypatch.delenv("GANDISSECT_DEBUG", raising=False)


def _segformer(num_labels: int = 150, **config) -> torch.nn.Module:
    torch.manual_seed(0)
    settings = {"num_labels": num_labels, "num_channels": 3, "hidden_sizes": [8, 16, 24, 32], "depths": [1, 1, 1, 1],
                "num_attention_heads": [1, 1, 2, 2], "decoder_hidden_size": 16} | config
    return transformers.SegformerForSemanticSegmentation(transformers.SegformerConfig(**settings)).eval()


def _window_on_building(model: torch.nn.Module) -> torch.nn.Module:
    """Every class but building and window made unlikely, so random weights split pixels between the two."""
    with torch.no_grad():
        bias = model.decode_head.classifier.bias
        bias.fill_(-30.0)
        bias[BUILDING] = bias[WINDOW] = 0.0
    return model


@pytest.fixture(scope="module")
def segformer_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("segformer")
    _window_on_building(_segformer()).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def upernet_dir(tmp_path_factory) -> Path:
    torch.manual_seed(1)
    backbone = transformers.ConvNextConfig(depths=[1, 1, 1, 1], hidden_sizes=[8, 16, 24, 32],
                                           out_features=["stage1", "stage2", "stage3", "stage4"])
    config = transformers.UperNetConfig(backbone_config=backbone, hidden_size=16, auxiliary_channels=8,
                                        use_auxiliary_head=False, num_labels=150)
    folder = tmp_path_factory.mktemp("upernet")
    transformers.UperNetForSemanticSegmentation(config).eval().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def segmenter(segformer_dir) -> ADE20KSegmenter:
    return resolve_segmenter(f"ade20k:{segformer_dir}")


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(3)) * 2 - 1


def test_unnamed_150_classes_are_ade20k_with_parts(segmenter):
    concepts, categories = check_segmenter(segmenter)
    assert len(concepts) == 150
    assert {i: concepts[i] for i in SPOT_CHECKS} == SPOT_CHECKS
    assert {c for c, k in zip(concepts, categories, strict=True) if k == "part"} == EXPECTED_PARTS
    assert set(categories) == {"object", "part"}
    assert categories[concepts.index("bicycle")] == "object"  # "bicycle, bike, wheel, cycle" is not a wheel part


def test_real_names_map_through_the_table_and_others_pass_through():
    assert concepts_for(["cat", "windowpane, window", "door;double;door", "building"]) == (
        ["cat", "window", "door", "building"], ["object", "part", "part", "object"])
    with pytest.raises(ConfigError, match="19 unnamed classes"):
        concepts_for([f"LABEL_{i}" for i in range(19)])
    with pytest.raises(ConfigError, match=r"\['window'\] more than once"):
        concepts_for(["windowpane", "window"])


def test_labels_have_the_papers_resolution_shape_and_dtype(segmenter, images):
    seen = []
    handle = segmenter.network.register_forward_hook(lambda m, args, kwargs, out: seen.append(kwargs["pixel_values"]),
                                                     with_kwargs=True)
    try:
        labels = segmenter.segment(images)
        small = segmenter.segment(images[:, :, :64, :64])
    finally:
        handle.remove()
    assert [tuple(x.shape) for x in seen] == [(2, 3, 256, 256)] * 2  # parsed at 256 whatever the image size
    assert labels.shape == (2, 2, 128, 128) and labels.dtype == torch.int64  # half the image, as GAN Dissection
    assert small.shape == (2, 2, 32, 32)
    assert torch.equal(check_labels(labels, images, 150), labels)


def test_options_change_the_resolution_and_dtype(segformer_dir, images):
    segmenter = resolve_segmenter(f"ade20k:{segformer_dir},size=64,downsample=1,dtype=bfloat16")
    assert segmenter.pixel_values(images).shape == (2, 3, 64, 64)
    assert next(segmenter.network.parameters()).dtype == torch.bfloat16
    labels = segmenter.segment(images)
    assert labels.shape == (2, 2, 256, 256) and labels.dtype == torch.int64
    assert segmenter.concept_scores(images).dtype == torch.float32


def test_labels_are_the_argmax_of_the_scores_with_objects_under_parts(segmenter, images):
    scores = segmenter.concept_scores(images)
    assert scores.shape == (2, 150, 128, 128) and scores.min() >= 0 and scores.max() <= 1
    torch.testing.assert_close(scores.sum(1), torch.ones(2, 128, 128))
    labels = segmenter.segment(images)
    best = scores.argmax(1)
    window = best == WINDOW
    assert 0.05 < window.float().mean() < 0.95  # the random model draws both
    assert set(best.unique().tolist()) == {BUILDING, WINDOW}
    assert (labels[:, 0] == BUILDING).all()  # the object under a window is the building
    top = scores.topk(2, dim=1).values
    decided = top[:, 0] > top[:, 1] * (1 + 1e-5)  # where rounded probabilities tie, the argmax may go either way
    assert decided.float().mean() > 0.9
    assert torch.equal(labels[:, 1][decided], torch.where(window, WINDOW, -1)[decided])


class _TwoPixelLogits(torch.nn.Module):
    """A stand-in network: whatever the input, class 1's logit is -1 on the left pixel and +1 on the right."""

    def forward(self, pixel_values: torch.Tensor) -> object:
        logits = torch.tensor([[[0.0, 0.0]], [[-1.0, 1.0]]]).expand(len(pixel_values), 2, 2, 2)
        return type("Output", (), {"logits": logits})


def test_logits_are_resized_bilinearly_before_the_argmax():
    segmenter = ADE20KSegmenter(_TwoPixelLogits(), ["ground", "thing"], ["object", "object"], input_size=32)
    images = torch.zeros(1, 3, 16, 16)
    scores = segmenter.concept_scores(images)
    assert scores.shape == (1, 2, 8, 8)
    # 2 -> 8 columns, half-pixel centres: the logit runs -1, -1, -0.75, -0.25, 0.25, 0.75, 1, 1 (worked by hand)
    ramp = torch.sigmoid(torch.tensor([-1, -1, -0.75, -0.25, 0.25, 0.75, 1, 1]))
    torch.testing.assert_close(scores[0, 1], ramp.expand(8, 8))
    assert torch.equal(segmenter.segment(images)[0, 0], (ramp > 0.5).long().expand(8, 8))


def test_scores_are_differentiable_in_the_images(segmenter, images):
    pixels = images[:1].clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(segmenter.concept_scores(pixels)[:, WINDOW].mean(), pixels)
    assert torch.isfinite(gradient).all() and gradient.abs().sum() > 0
    assert not any(p.requires_grad for p in segmenter.parameters())  # the causal tools train nothing in it


def test_normalisation_follows_the_preprocessor_config(tmp_path, segformer_dir, images):
    plain = resolve_segmenter(f"ade20k:{segformer_dir}")
    imagenet = ((images + 1) / 2 - torch.tensor([0.485, 0.456, 0.406])[:, None, None]) / torch.tensor(
        [0.229, 0.224, 0.225])[:, None, None]
    torch.testing.assert_close(plain.pixel_values(images), imagenet)
    shutil.copytree(segformer_dir, tmp_path / "model")
    (tmp_path / "model" / "preprocessor_config.json").write_text(json.dumps(
        {"do_rescale": True, "rescale_factor": 1 / 255, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}))
    halves = resolve_segmenter(f"ade20k:{tmp_path / 'model'}")
    torch.testing.assert_close(halves.pixel_values(images), images)  # (x01 - 0.5) / 0.5 gives back [-1, 1]


def test_composes_with_the_colour_segmenter(segformer_dir, segmenter, images):
    merged = resolve_segmenter(f"ade20k:{segformer_dir}+color")
    assert isinstance(merged, MergedSegmenter)
    concepts, categories = check_segmenter(merged)
    assert len(concepts) == 150 + 11 and concepts[150:] == ColorSegmenter().concepts
    assert categories[8] == "part" and categories[150:] == ["color"] * 11
    labels = merged.segment(images)
    assert labels.shape == (2, 3, 128, 128)
    assert torch.equal(labels[:, :2], segmenter.segment(images))
    assert labels[:, 2].min() >= 150 and labels[:, 2].max() < 161
    assert merged.concept_scores(images).shape == (2, 161, 128, 128)


def test_upernet_builds_and_segments(upernet_dir, images):
    segmenter = resolve_segmenter(f"ade20k:{upernet_dir},size=64")
    assert segmenter.concepts[8] == "window" and segmenter.categories[14] == "part"
    labels = segmenter.segment(images)
    scores = segmenter.concept_scores(images)
    assert labels.shape == (2, 2, 128, 128) and scores.shape == (2, 150, 128, 128)
    best = scores.argmax(1)
    parts = segmenter.is_part[best]
    top = scores.topk(2, dim=1).values
    decided = top[:, 0] > top[:, 1] * (1 + 1e-5)
    assert decided.float().mean() > 0.9
    assert torch.equal(labels[:, 1][decided], torch.where(parts, best, -1)[decided])
    assert torch.equal(labels[:, 0][decided & ~parts], best[decided & ~parts])
    assert not segmenter.is_part[labels[:, 0]].any()


def _fake_hub_cache(root: Path, repo_id: str, model_dir: Path) -> None:
    """The layout huggingface_hub's cache uses: refs/main names a snapshot folder holding the files."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    shutil.copytree(model_dir, repo / "snapshots" / ("0" * 40))


def test_hub_ids_and_known_names_come_from_local_caches_only(tmp_path, monkeypatch, segformer_dir, images):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("GANDISSECT_CACHE", str(tmp_path / "gandissect"))
    _fake_hub_cache(tmp_path / "hub", "nvidia/segformer-b0-finetuned-ade-512-512", segformer_dir)
    shutil.copytree(segformer_dir, tmp_path / "gandissect" / "segformer-b2-finetuned-ade-512-512")
    expected = resolve_segmenter(f"ade20k:{segformer_dir}").segment(images)
    for source in ("nvidia/segformer-b0-finetuned-ade-512-512", "segformer-b0", "segformer-b2"):
        assert torch.equal(resolve_segmenter(f"ade20k:{source}").segment(images), expected), source
    with pytest.raises(ConfigError, match=r"not in the local Hugging Face cache.*`hf download nvidia/segformer-b4"):
        resolve_segmenter("ade20k:segformer-b4")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))  # what `gandissect models` reports as cached
    cached = {k["name"]: k["cached"] for k in describe_loader(get_loader("ade20k"))["known"]}
    assert (cached["segformer-b0"], cached["segformer-b2"], cached["segformer-b4"]) == (True, True, False)
    with pytest.raises(ConfigError, match=r"no folder someone/missing-model.*`hf download someone/missing-model`"):
        resolve_segmenter("ade20k:someone/missing-model")


def _run_cli(out: Path, segmenter: str, *extra: str) -> int:
    return main(["dissect", "--model", PLANTED, "--segmenter", segmenter, "--layers", "features", "--samples", "8",
                 "--batch-size", "4", "--quantile", "0.15", "--no-report", "--out", str(out), *extra])


def test_dissect_end_to_end(tmp_path, segformer_dir, capsys):
    assert _run_cli(tmp_path / "run", f"ade20k:{segformer_dir},size=64+color") == 0
    document = json.loads((tmp_path / "run" / "dissect.json").read_text())
    concepts = {c["name"]: c["category"] for c in document["concepts"]}
    assert len(concepts) == 161 and concepts["window"] == "part" and concepts["building"] == "object"
    assert concepts["red"] == "color"
    assert document["segmentation_size"] == [16, 16]  # 32x32 images, labels at half size
    record = document["segmenter_checkpoint"]  # kept although the ADE20K parser is merged with colours
    assert record["path"] == str(segformer_dir)
    weights = next(p for p in segformer_dir.iterdir() if p.suffix == ".safetensors")
    assert record["sha256"][weights.name] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert re.search(r"concept\s+features\n", capsys.readouterr().out)  # the summary table has the layer's column


@pytest.mark.parametrize(("make", "message"), [
    ("empty", "is not a Hugging Face model folder: it has no config.json"),
    ("bert", "holds a bert: the ade20k loader builds segformer or upernet"),
    ("nineteen", "19 unnamed classes"),
    ("option", "the ade20k loader has no option 'stride'"),
    ("size", "ade20k option size='100': expected an integer >= 32 and a multiple of 32"),
])
def test_mistakes_are_one_clear_line(tmp_path, segformer_dir, capsys, make, message):
    folder = tmp_path / "model"
    folder.mkdir()
    spec = f"ade20k:{folder}"
    if make == "bert":
        (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    elif make == "nineteen":
        _segformer(19).save_pretrained(folder)
    elif make == "option":
        spec = f"ade20k:{segformer_dir},stride=2"
    elif make == "size":
        spec = f"ade20k:{segformer_dir},size=100"
    capsys.readouterr()
    assert _run_cli(tmp_path / "run", spec) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and message in error[0], error


def _python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("GANDISSECT_DEBUG", None)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          timeout=120)


def test_importing_the_loader_does_not_import_transformers():
    result = _python("""
        import sys
        import gandissect.models
        from gandissect.models import loaders
        loaders.describe_loader(loaders.get_loader("ade20k"))
        import gandissect.models.ade20k
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("transformers", "huggingface_hub")))
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_without_the_extra_the_error_says_how_to_install_it(segformer_dir):
    result = _python(f"""
        import sys
        sys.modules["transformers"] = None  # as if the extra were not installed
        import gandissect, gandissect.models, gandissect.models.ade20k, gandissect.models.ade20k.loader
        from gandissect.cli import main
        from gandissect.models import resolve_segmenter
        from gandissect.models.loaders import MissingExtraError
        try:
            resolve_segmenter({f"ade20k:{segformer_dir}"!r})
        except MissingExtraError as error:
            print("refused:", error)
        code = main(["dissect", "--model", {PLANTED!r}, "--segmenter", {f"ade20k:{segformer_dir}"!r},
                     "--layers", "features", "--out", {str(segformer_dir.parent / "never")!r}])
        print("exit", code)
    """)
    assert result.returncode == 0, result.stderr
    assert "refused:" in result.stdout and "pip install 'gandissect[ade20k]'" in result.stdout
    assert result.stdout.strip().endswith("exit 2")
    assert "pip install 'gandissect[ade20k]'" in result.stderr and "Traceback" not in result.stderr
