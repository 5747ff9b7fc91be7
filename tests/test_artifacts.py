"""Artifact units against independent truth: a planted generator whose unit 4 paints magenta speckles that no
real image has, scored with a known colour-counting feature extractor; Frechet distances against closed forms."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from gandissect.causal.artifacts import dissection_top, top_samples, unit_realism
from gandissect.causal.artifactstudy import (
    ADVISED_ROWS,
    artifact_study,
    basic_interval,
    bootstrap_distances,
    check_counts,
)
from gandissect.causal.cut import Cut
from gandissect.causal.realism import FeatureMoments, concept_features, linear_head_patches, nearest_real_ratio
from gandissect.core.errors import ConfigError
from gandissect.core.frechet import feature_frechet, frechet_distance, gaussian_fit
from gandissect.core.sampling import sample_z
from gandissect.core.segmenters import ColorSegmenter
from gandissect.dissection import DissectConfig, Dissection, Dissector
from planted import Painter, PlantedGenerator

ARTIFACT = 4
MAGENTA = (1.0, -1.0, 1.0)
# red, green, blue, grey (the painter's colours) and magenta (the artifact), in [-1, 1]
COLOURS = torch.tensor([[0.8, 0.1, 0.1], [0.2, 0.6, 0.2], [0.2, 0.4, 0.85], [0.55, 0.55, 0.55],
                        [1.0, 0.0, 1.0]]) * 2 - 1


class SpecklePainter(Painter):
    """The planted painter, plus bright magenta speckles (60% of pixels) around cells where unit 4 > 8."""

    def __init__(self, threshold: float = 8.0, reach: int = 2) -> None:
        super().__init__()
        self.threshold, self.reach = threshold, reach
        g = torch.Generator().manual_seed(7)
        self.register_buffer("speckle", (torch.rand(1, 1, 32, 32, generator=g) < 0.6).float())

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        image = super().forward(features)
        high = F.max_pool2d((features[:, ARTIFACT:ARTIFACT + 1] > self.threshold).float(), 2 * self.reach + 1,
                            stride=1, padding=self.reach)
        speckles = F.interpolate(high, scale_factor=4, mode="nearest") * self.speckle
        return torch.where(speckles > 0, torch.tensor(MAGENTA)[None, :, None, None], image)


class ArtifactGenerator(PlantedGenerator):
    """PlantedGenerator whose unit 4 is noise of its own (z[:, 16:], independent of unit 3) that paints speckles.
    Without the speckles its images are exactly PlantedGenerator's images of z[:, :16]."""

    z_dim = 24

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.register_buffer("artifact_weights", torch.randn(8, 64, generator=g))
        self.output = SpecklePainter()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        artifact = torch.relu(z[:, 16:] @ self.artifact_weights).view(z.shape[0], 1, 8, 8)
        return self.output(self.features(torch.cat([self.planted(z), self.noise(z)[:, :1], artifact], 1)))


def colour_fractions(images: torch.Tensor) -> torch.Tensor:
    """(N, 5): the fraction of pixels of each of red, green, blue, grey and magenta."""
    distance = (images[:, None] - COLOURS[None, :, :, None, None]).abs().amax(2)
    return (distance < 0.05).float().flatten(2).mean(2)


def magenta_share(images: torch.Tensor) -> torch.Tensor:
    return colour_fractions(images)[:, 4]


def magenta_patches(images: torch.Tensor) -> torch.Tensor:
    """(N, 4, 4): minus the magenta share of each 8x8 patch (higher = more real)."""
    magenta = (images - COLOURS[4][None, :, None, None]).abs().amax(1) < 0.05
    return -F.avg_pool2d(magenta[:, None].float(), 8)[:, 0]


def real_features(seed: int, count: int = 256) -> torch.Tensor:
    """Colour fractions of unedited PlantedGenerator images: the same pictures without any speckle."""
    generator = PlantedGenerator()
    return colour_fractions(generator(sample_z(generator, seed, range(count))))


@pytest.fixture(scope="module")
def artifact_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("artifacts")
    config = DissectConfig(layers=["features"], samples=64, batch_size=32, quantile=0.15, checkpoint_every=8)
    dissector = Dissector(ArtifactGenerator(), ColorSegmenter(), config, out, progress=False)
    dissector.finish(dissector.run())
    return Dissection.load(out)


@pytest.fixture(scope="module")
def scores(artifact_run):
    top, seed = dissection_top(artifact_run, "features")
    return unit_realism(ArtifactGenerator(), "features", top, seed, features=colour_fractions,
                        real_features=real_features(9), realism=lambda x: -magenta_share(x),
                        patch_realism=magenta_patches, batch_size=64, progress=False)


# --- Frechet distance against closed forms --------------------------------------------------------------------------

def _fd_2x2(mu1, a, mu2, b):
    """Pure-Python Frechet distance of 2-D Gaussians: tr sqrt(M) of a 2x2 PSD M with eigenvalues l1, l2 is
    sqrt(l1) + sqrt(l2) = sqrt(tr M + 2 sqrt(det M)); here tr M = tr(AB), det M = det A det B."""
    tr_ab = a[0][0] * b[0][0] + a[0][1] * b[1][0] + a[1][0] * b[0][1] + a[1][1] * b[1][1]
    det_a = a[0][0] * a[1][1] - a[0][1] * a[1][0]
    det_b = b[0][0] * b[1][1] - b[0][1] * b[1][0]
    cross = math.sqrt(tr_ab + 2 * math.sqrt(det_a * det_b))
    shift = (mu1[0] - mu2[0]) ** 2 + (mu1[1] - mu2[1]) ** 2
    return shift + a[0][0] + a[1][1] + b[0][0] + b[1][1] - 2 * cross


def test_frechet_distance_equals_closed_forms():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 3, generator=g, dtype=torch.float64)
    assert feature_frechet(x, x) == pytest.approx(0, abs=1e-9)
    shift = torch.tensor([0.5, -2.0, 1.0], dtype=torch.float64)
    assert feature_frechet(x, x + shift) == pytest.approx(float((shift ** 2).sum()), abs=1e-9)
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2
    assert frechet_distance(torch.tensor([1.0]), torch.tensor([[4.0]]), torch.tensor([3.0]),
                            torch.tensor([[9.0]])) == pytest.approx(4 + 1)
    for _ in range(5):
        m = torch.randn(2, 2, generator=g)
        n = torch.randn(2, 2, generator=g)
        a, b = (m @ m.T + 0.1 * torch.eye(2)).double(), (n @ n.T).double()
        mu1, mu2 = torch.randn(2, generator=g).double(), torch.randn(2, generator=g).double()
        expected = _fd_2x2(mu1.tolist(), a.tolist(), mu2.tolist(), b.tolist())
        assert frechet_distance(mu1, a, mu2, b) == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_nearest_real_ratio_equals_a_brute_force_loop():
    g = torch.Generator().manual_seed(2)
    real, fake = torch.randn(12, 2, generator=g).double(), torch.randn(5, 2, generator=g).double() * 3
    ratios = nearest_real_ratio(fake, real, k=2)
    for i, f in enumerate(fake.tolist()):
        best = math.inf
        for r in real.tolist():
            others = sorted(math.dist(r, o) for o in real.tolist())  # others[0] is r itself
            best = min(best, math.dist(f, r) / others[2])
        assert float(ratios[i]) == pytest.approx(best, rel=1e-9)
    assert bool((nearest_real_ratio(real, real, k=2) == 0).all())


def test_feature_moments_merge_to_the_gaussian_fit():
    x = torch.randn(50, 4, generator=torch.Generator().manual_seed(1))
    first, second = FeatureMoments(4), FeatureMoments(4)
    first.add(x[:7])
    first.add(x[7:20])
    second.add(x[20:])
    first.merge(second)
    mean, cov = gaussian_fit(x)
    assert torch.allclose(first.gaussian()[0], mean) and torch.allclose(first.gaussian()[1], cov)


# --- top images -----------------------------------------------------------------------------------------------------

def test_dissection_top_regenerates_the_top_images(artifact_run):
    generator = ArtifactGenerator()
    top, seed = dissection_top(artifact_run, "features")
    assert seed == artifact_run.config.iou_seed and top.shape == (5, 12)
    values = artifact_run.statistics["topk/features"].values
    cut = Cut(generator, "features")
    for unit in range(5):
        peaks = cut.head(sample_z(generator, seed, top[unit])).flatten(2).amax(2)[:, unit]
        assert torch.allclose(peaks, values[unit])


def test_top_samples_equal_a_brute_force_sort():
    generator = ArtifactGenerator()
    top = top_samples(generator, "features", samples=40, seed=5, k=6, batch_size=16, progress=False)
    peaks = Cut(generator, "features").head(sample_z(generator, 5, range(40))).flatten(2).amax(2)
    for unit in range(5):
        assert torch.equal(top[unit], peaks[:, unit].sort(descending=True, stable=True).indices[:6])


# --- the planted artifact -------------------------------------------------------------------------------------------

def test_the_artifact_unit_ranks_first_by_every_signal(scores):
    assert set(scores.signals) == {"frechet", "nearest_real", "realism", "patch_realism", "ablation_frechet",
                                   "ablation_realism"}
    for signal in scores.signals:
        assert scores.ranking(signal)[0] == ARTIFACT, (signal, scores.scores[signal])
    frechet = scores.scores["frechet"]
    assert float(frechet[ARTIFACT]) > 1.5 * float(frechet[:ARTIFACT].max())
    # ablating unit 3 (paints nothing) changes nothing; ablating the artifact removes every speckle, so the
    # realism gain equals the magenta share that was there
    assert float(scores.scores["ablation_realism"][3]) == 0
    gain, share = scores.scores["ablation_realism"][ARTIFACT], scores.scores["realism"][ARTIFACT]
    assert float(gain) == pytest.approx(float(share)) and float(share) > 0.1
    json.dumps(scores.to_json())


def test_ablating_the_artifact_unit_lowers_the_models_distance_more_than_random_units(scores):
    study = artifact_study(ArtifactGenerator(), "features", scores, colour_fractions, real_features(10), count=1,
                           draws=6, samples=128, reference_features=real_features(11, 128), batch_size=64,
                           progress=False)
    assert study.ablated["frechet"] == [ARTIFACT]
    assert study.after["frechet"] < 0.5 * study.before
    assert study.after["frechet"] < 3 * study.reference  # no speckles left: as close as real images get
    assert {tuple(u) for u in study.random_units} - {(ARTIFACT,)}, "no draw picked another unit"
    for units, after in zip(study.random_units, study.random_after, strict=True):
        if units != [ARTIFACT]:
            assert after > study.after["frechet"] + 0.01, (units, after)
            assert after >= study.before - 1e-9, (units, after)  # no other unit brings the model nearer
    assert study.gain("frechet") > study.random_gain
    assert study.best_signal == "frechet"  # all signals ablate unit 4: ties go to the first
    report = json.loads(json.dumps(study.to_json()))
    assert report["best_signal"] == "frechet" and report["random"]["units"] == study.random_units
    # every distance and gain has an interval around it; ablating the artifact helps beyond sampling noise
    values = {"before": study.before, "after/frechet": study.after["frechet"], "gain/frechet": study.gain("frechet"),
              "random_mean": study.random_mean, "random_gain": study.random_gain}
    for name, value in values.items():
        low, high = study.intervals[name]
        assert low <= value <= high, (name, low, value, high)
    assert study.intervals["gain/frechet"][0] > 0 and study.intervals["before"][0] >= 0
    assert report["intervals"]["level"] == 0.95 and report["intervals"]["gain/frechet"] == list(
        study.intervals["gain/frechet"])
    assert study.warnings == []  # 128 samples and 256 real rows


def test_basic_bootstrap_interval_covers_a_known_distance():
    """Gaussian features N(0, I) against N(m, I) in 10 dimensions: the true distance is |m|^2 = 1. At 120 and
    100 rows the estimate is biased upward; the basic interval covers the truth in most seeded tries, where the
    percentile interval (the bootstrap quantiles themselves, above the biased estimate) would not."""
    dim, truth = 10, 1.0
    shift = torch.full((dim,), math.sqrt(truth / dim), dtype=torch.float64)
    covered = above = percentile = 0
    for trial in range(20):
        g = torch.Generator().manual_seed(trial)
        generated = torch.randn(120, dim, generator=g, dtype=torch.float64)
        real = torch.randn(100, dim, generator=g, dtype=torch.float64) + shift
        estimate = feature_frechet(generated, real)
        draws = bootstrap_distances({"x": generated}, real, 100, seed=trial)["x"]
        low, high = basic_interval(draws, estimate, 0.95, 0.0)
        covered += low <= truth <= high
        above += estimate > truth
        percentile += bool(torch.quantile(draws, 0.025) <= truth <= torch.quantile(draws, 0.975))
    assert above >= 18  # the bias the interval has to correct
    assert covered >= 17 and percentile <= 5, (covered, percentile)


def test_too_few_rows_are_refused_and_few_rows_warned():
    with pytest.raises(ConfigError, match="12 generated samples cannot fit a Gaussian in 12 feature dimensions"):
        check_counts(12, 500, 12)
    with pytest.raises(ConfigError, match="5 real feature rows"):
        check_counts(500, 5, 12)
    warnings = check_counts(13, ADVISED_ROWS, 12)
    assert len(warnings) == 1 and "only 13 generated samples" in warnings[0]
    assert check_counts(ADVISED_ROWS, ADVISED_ROWS, 12) == []
    scores_stub = None  # refused before any scoring is needed
    with pytest.raises(ConfigError, match="cannot fit a Gaussian in 5 feature dimensions"):
        artifact_study(ArtifactGenerator(), "features", scores_stub, colour_fractions, real_features(10, 5),
                       count=1, samples=64, progress=False)


# --- user-supplied extractors and helpers ---------------------------------------------------------------------------

def test_a_user_feature_extractor_is_used():
    calls = []

    def constant(images):
        calls.append(len(images))
        return torch.ones(len(images), 2)

    top = torch.arange(15).reshape(5, 3)
    result = unit_realism(ArtifactGenerator(), "features", top, 5, features=constant,
                          real_features=torch.ones(10, 2), ablation=False, progress=False)
    assert sum(calls) == 15  # each distinct top image once
    assert torch.equal(result.scores["frechet"], torch.zeros(5, dtype=torch.float64))
    shifted = unit_realism(ArtifactGenerator(), "features", top, 5, features=constant,
                           real_features=torch.full((10, 2), 3.0), ablation=False, progress=False)
    assert torch.allclose(shifted.scores["frechet"], torch.full((5,), 8.0, dtype=torch.float64))


def test_missing_top_images_are_skipped_and_rank_last():
    top = torch.tensor([[0, 1, -1], [-1, -1, -1], [2, 3, 4], [5, 6, 7], [8, -1, -1]])
    result = unit_realism(ArtifactGenerator(), "features", top, 5, realism=lambda x: torch.zeros(len(x)),
                          ablation=False, progress=False)
    assert torch.isnan(result.scores["realism"][1]) and result.ranking("realism")[-1] == 1
    assert result.ranking("realism")[:4] == [0, 2, 3, 4]  # equal scores: by unit number


def test_concept_features_are_areas_in_percent():
    images = torch.full((2, 3, 8, 8), -1.0)
    images[1, :, :4] = 1.0  # top half white
    soft = concept_features(ColorSegmenter())(images)
    assert soft.shape == (2, 11) and torch.allclose(soft.sum(1), torch.full((2,), 100.0))

    class HardOnly:
        concepts, categories = ["dark", "light"], ["color", "color"]

        def segment(self, images):
            return (images.mean(1, keepdim=True) > 0).long()

    hard = concept_features(HardOnly(), grid=2)(images)
    assert hard.shape == (2, 8)  # per concept, per quadrant
    assert hard[1].tolist() == [0.0, 0.0, 100.0, 100.0, 100.0, 100.0, 0.0, 0.0]


def test_linear_head_patches_sum_to_the_discriminators_logit():
    from gandissect.models.scenegan.modeling import GeneratorConfig, SceneDiscriminator

    torch.manual_seed(0)
    discriminator = SceneDiscriminator(GeneratorConfig(channels=(8, 8, 8), disc_channels=(4, 8))).eval()
    images = torch.rand(3, 3, 32, 32) * 2 - 1
    maps = linear_head_patches(discriminator)(images)
    assert maps.shape == (3, 8, 8)
    with torch.no_grad():
        logits = discriminator(images)
    assert torch.allclose(maps.sum((1, 2)) + discriminator.head.bias, logits, atol=1e-5)
    with pytest.raises(ConfigError, match="linear `head`"):
        linear_head_patches(torch.nn.Conv2d(3, 1, 3))


def test_bad_input_is_refused_in_one_line(scores):
    generator = ArtifactGenerator()
    top = torch.arange(10).reshape(5, 2)
    with pytest.raises(ConfigError, match="both a feature extractor and real features"):
        unit_realism(generator, "features", top, 5, features=colour_fractions, progress=False)
    with pytest.raises(ConfigError, match="5 dimensions but real features have 3"):
        unit_realism(generator, "features", top, 5, features=colour_fractions, real_features=torch.zeros(4, 3),
                     progress=False)
    with pytest.raises(ConfigError, match=r"realism returned \(10, 2\) for 10 images"):
        unit_realism(generator, "features", top, 5, realism=lambda x: torch.zeros(len(x), 2), progress=False)
    with pytest.raises(ConfigError, match=r"units \[7\] are out of range"):
        unit_realism(generator, "features", top, 5, realism=magenta_share, units=[7], progress=False)
    with pytest.raises(ConfigError, match=r"count must lie in 1\.\.5"):
        artifact_study(generator, "features", scores, colour_fractions, real_features(10, 16), count=6)
    with pytest.raises(ConfigError, match="no signal 'fid'"):
        artifact_study(generator, "features", scores, colour_fractions, real_features(10, 16), count=1,
                       signals=["fid"])
