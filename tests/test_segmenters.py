"""Segmenters: the colour segmenter, merging several segmenters, and validation of segmenter output."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gandissect.core.segmenters import (
    COLOR_PROTOTYPES,
    ColorSegmenter,
    MergedSegmenter,
    ModuleSegmenter,
    Segmenter,
    SegmenterOutputError,
    check_labels,
)


def _prototype_image() -> torch.Tensor:
    """One row of pixels, each a pure prototype colour, as a (1, 3, 1, 11) image in [-1, 1]."""
    rgb = torch.tensor(list(COLOR_PROTOTYPES.values()))
    return (rgb.T[None, :, None, :] * 2 - 1).float()


def test_color_segmenter_names_prototypes_after_themselves():
    segmenter = ColorSegmenter()
    assert isinstance(segmenter, Segmenter)
    assert segmenter.concepts == list(COLOR_PROTOTYPES) and set(segmenter.categories) == {"color"}
    labels = segmenter.segment(_prototype_image())
    assert labels.shape == (1, 1, 1, len(COLOR_PROTOTYPES)) and labels.dtype == torch.long
    assert [segmenter.concepts[i] for i in labels.flatten().tolist()] == list(COLOR_PROTOTYPES)


def test_color_segmenter_on_slightly_shifted_colours():
    image = (_prototype_image() + 0.04).clamp(-1, 1)
    assert ColorSegmenter().segment(image).flatten().tolist() == list(range(len(COLOR_PROTOTYPES)))


def test_color_scores_are_differentiable_and_sum_to_one():
    segmenter = ColorSegmenter()
    images = (torch.rand(2, 3, 5, 5) * 2 - 1).requires_grad_()
    scores = segmenter.concept_scores(images)
    assert scores.shape == (2, len(COLOR_PROTOTYPES), 5, 5)
    assert torch.allclose(scores.sum(1), torch.ones(2, 5, 5), atol=1e-5)
    assert ((scores >= 0) & (scores <= 1)).all()
    scores[:, segmenter.concepts.index("blue")].sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert torch.equal(scores.argmax(1, keepdim=True), segmenter.segment(images.detach()))


class Fixed:
    """A segmenter that returns given labels whatever the images."""

    def __init__(self, concepts: list[str], labels: torch.Tensor) -> None:
        self.concepts = concepts
        self.categories = ["object"] * len(concepts)
        self.labels = labels

    def segment(self, images: torch.Tensor) -> torch.Tensor:
        return self.labels.expand(images.shape[0], *self.labels.shape[1:])


def test_merged_segmenter_offsets_labels_and_keeps_nothing():
    first = Fixed(["a", "b"], torch.tensor([[[[0, 1], [-1, 1]]]]))
    second = Fixed(["c", "d", "e"], torch.tensor([[[[2, -1], [0, 1]]]]))
    merged = MergedSegmenter(first, second)
    assert merged.concepts == ["a", "b", "c", "d", "e"]
    assert merged.categories == ["object"] * 5
    labels = merged.segment(torch.zeros(3, 3, 2, 2))
    assert labels.shape == (3, 2, 2, 2)
    assert labels[0, 0].tolist() == [[0, 1], [-1, 1]]
    assert labels[0, 1].tolist() == [[4, -1], [2, 3]]


def test_merged_segmenter_resizes_coarser_labels():
    fine = Fixed(["a"], torch.zeros(1, 1, 4, 4, dtype=torch.long))
    coarse = Fixed(["b", "c"], torch.tensor([[[[0, 1], [1, 0]]]]))
    labels = MergedSegmenter(fine, coarse).segment(torch.zeros(1, 3, 4, 4))
    assert labels.shape == (1, 2, 4, 4)
    assert labels[0, 1].tolist() == [[1, 1, 2, 2], [1, 1, 2, 2], [2, 2, 1, 1], [2, 2, 1, 1]]


def test_merged_segmenter_rejects_duplicate_concepts():
    with pytest.raises(ValueError, match="'b'"):
        MergedSegmenter(Fixed(["a", "b"], torch.zeros(1, 1, 1, 1)), Fixed(["b"], torch.zeros(1, 1, 1, 1)))
    with pytest.raises(ValueError):
        MergedSegmenter()


def test_merged_segmenter_validates_its_parts():
    bad = Fixed(["x"], torch.full((1, 1, 2, 2), 5))
    with pytest.raises(SegmenterOutputError, match="Fixed"):
        MergedSegmenter(bad).segment(torch.zeros(1, 3, 2, 2))


def test_merged_scores_concatenate():
    merged = MergedSegmenter(ColorSegmenter(), Fixed(["thing"], torch.zeros(1, 1, 1, 1)))
    with pytest.raises(TypeError, match="Fixed"):
        merged.concept_scores(torch.zeros(1, 3, 2, 2))


def test_check_labels_accepts_good_output():
    images = torch.zeros(2, 3, 4, 4)
    labels = check_labels(torch.zeros(2, 4, 4, dtype=torch.int32), images, 3)
    assert labels.shape == (2, 1, 4, 4) and labels.dtype == torch.long
    assert check_labels(torch.full((2, 2, 4, 4), -1), images, 3).shape == (2, 2, 4, 4)


@pytest.mark.parametrize(
    ("labels", "says"),
    [
        (torch.zeros(2, 1, 4, 4), "dtype torch.float32"),
        (torch.zeros(2, 1, 4, 4, dtype=torch.bool), "dtype torch.bool"),
        (torch.zeros(3, 1, 4, 4, dtype=torch.long), "shape (3, 1, 4, 4)"),
        (torch.zeros(2, 4, dtype=torch.long), "shape (2, 4)"),
        (torch.full((2, 1, 4, 4), 3), "[3, 3]"),
        (torch.full((2, 1, 4, 4), -3), "[-3, -3]"),
        ([[0]], "list"),
    ],
)
def test_check_labels_says_what_was_expected(labels, says):
    with pytest.raises(SegmenterOutputError) as info:
        check_labels(labels, torch.zeros(2, 3, 4, 4), 3, name="mine")
    message = str(info.value)
    assert says in message
    assert "mine.segment" in message and "N=2" in message and "[-1, 2]" in message


def test_module_segmenter_wraps_logits():
    network = nn.Conv2d(3, 4, 1)
    segmenter = ModuleSegmenter(network, ["a", "b", "c", "d"], ["object"] * 4)
    images = torch.randn(2, 3, 5, 5)
    assert torch.equal(segmenter.segment(images), network(images).argmax(1, keepdim=True))
    assert torch.allclose(segmenter.concept_scores(images).sum(1), torch.ones(2, 5, 5))
    with pytest.raises(ValueError, match="2 categories"):
        ModuleSegmenter(network, ["a", "b", "c", "d"], ["object"] * 2)
