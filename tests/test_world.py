"""The procedural world: deterministic, size-independent layouts, context rules, labels that match pixels."""

from __future__ import annotations

import time

import numpy as np
import pytest

from gandissect.scenes import world

SIZE = 64
EPS = 1e-9


@pytest.fixture(scope="module")
def scenes() -> list[world.Scene]:
    return [world.render(seed, SIZE) for seed in range(200)]


def _centres(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit coordinates (x, y) of the centres of the true pixels of `mask`."""
    rows, cols = np.nonzero(mask)
    size = mask.shape[0]
    return (cols + 0.5) / size, (rows + 0.5) / size


def _inside_any(xs: np.ndarray, ys: np.ndarray, boxes: list[tuple[float, float, float, float]]) -> np.ndarray:
    inside = np.zeros(len(xs), bool)
    for x0, y0, x1, y1 in boxes:
        inside |= (xs >= x0 - EPS) & (xs <= x1 + EPS) & (ys >= y0 - EPS) & (ys <= y1 + EPS)
    return inside


def test_same_seed_same_scene_and_different_seeds_differ():
    a, b = world.render(7, SIZE), world.render(7, SIZE)
    assert np.array_equal(a.image, b.image)
    assert np.array_equal(a.labels, b.labels)
    assert a.horizon == b.horizon
    assert a.objects == b.objects
    c = world.render(8, SIZE)
    assert not np.array_equal(a.labels, c.labels)


def test_types_shapes_and_ranges(scenes):
    for scene in scenes[:20]:
        assert scene.image.dtype == np.uint8 and scene.image.shape == (SIZE, SIZE, 3)
        assert scene.labels.dtype == np.uint8 and scene.labels.shape == (SIZE, SIZE)
        assert int(scene.labels.max()) < len(world.CONCEPTS)
    images, labels = world.render_batch(range(3), 32)
    assert images.shape == (3, 32, 32, 3) and images.dtype == np.uint8
    assert labels.shape == (3, 32, 32) and labels.dtype == np.uint8
    assert np.array_equal(labels[1], world.render(1, 32).labels)


def test_too_small_size_is_refused():
    with pytest.raises(ValueError, match="16"):
        world.render(0, 15)
    assert world.render(0, 16).labels.shape == (16, 16)


def test_layout_is_the_same_at_any_size():
    for seed in range(20):
        small, large = world.render(seed, 64), world.render(seed, 128)
        assert small.horizon == large.horizon
        assert small.objects == large.objects
        agreement = (large.labels[::2, ::2] == small.labels).mean()
        assert agreement >= 0.9, (seed, agreement)


def test_every_concept_appears(scenes):
    seen = set()
    for scene in scenes:
        seen |= {world.CONCEPTS[i] for i in np.unique(scene.labels)}
    assert seen == set(world.CONCEPTS)


def test_parts_name_a_host_of_the_right_concept(scenes):
    parts = 0
    for scene in scenes:
        for obj in scene.objects:
            if obj.concept in world.HOSTS:
                parts += 1
                assert obj.host is not None and 0 <= obj.host < len(scene.objects)
                host = scene.objects[obj.host]
                assert host.concept == world.HOSTS[obj.concept]
            else:
                assert obj.host is None
    assert parts > 100


def test_part_boxes_sit_on_their_hosts(scenes):
    doors = 0
    for scene in scenes:
        for obj in scene.objects:
            if obj.host is None:
                continue
            hx0, hy0, hx1, hy1 = scene.objects[obj.host].box
            x0, y0, x1, y1 = obj.box
            if obj.concept == "door":
                doors += 1
                assert y1 == pytest.approx(hy1)  # a door stands at its building's base
                assert hx0 - EPS <= x0 and x1 <= hx1 + EPS and hy0 <= y0
            elif obj.concept == "window":
                assert hx0 - EPS <= x0 and x1 <= hx1 + EPS and hy0 - EPS <= y0 and y1 <= hy1 + EPS
            elif obj.concept == "roof":
                assert y1 == pytest.approx(hy0)  # a roof sits on top of its building
                assert x0 == pytest.approx(hx0 - 0.01) and x1 == pytest.approx(hx1 + 0.01)
            elif obj.concept == "trunk":
                assert y1 == pytest.approx(hy1)  # the trunk reaches the ground under the crown
                assert hx0 - EPS <= x0 and x1 <= hx1 + EPS
    assert doors > 20


@pytest.mark.parametrize("part", ["window", "door", "roof", "trunk"])
def test_part_pixels_lie_on_their_parts_and_hosts(scenes, part):
    host_concept = world.HOSTS[part]
    pixels = 0
    for scene in scenes:
        xs, ys = _centres(scene.labels == world.CONCEPT_INDEX[part])
        if not len(xs):
            continue
        pixels += len(xs)
        part_objects = [o for o in scene.objects if o.concept == part]
        assert {scene.objects[o.host].concept for o in part_objects} == {host_concept}
        assert _inside_any(xs, ys, [o.box for o in part_objects]).all()
        hosts = [scene.objects[o.host].box for o in part_objects]
        if part == "roof":  # a roof overhangs its building by 0.01 and rises above it
            hosts = [(x0 - 0.01, 0.0, x1 + 0.01, y1) for x0, _, x1, y1 in hosts]
        assert _inside_any(xs, ys, hosts).all()
        if part == "trunk":
            assert _inside_any(xs, ys, [o.box for o in scene.objects if o.concept == "tree"]).all()
    assert pixels > 0


@pytest.mark.parametrize("concept", ["sun", "cloud"])
def test_sun_and_clouds_lie_above_the_horizon(scenes, concept):
    pixels = 0
    for scene in scenes:
        _, ys = _centres(scene.labels == world.CONCEPT_INDEX[concept])
        pixels += len(ys)
        assert (ys < scene.horizon).all()
    assert pixels > 0


def test_buildings_and_trees_stand_below_the_horizon(scenes):
    for scene in scenes:
        for obj in scene.objects:
            if obj.concept in ("building", "tree"):
                assert obj.box[3] > scene.horizon


def test_sky_is_bluer_than_grass(scenes):
    sky, grass = [], []
    for scene in scenes[:50]:
        image = scene.image.astype(np.float64)
        sky.append(image[scene.labels == world.CONCEPT_INDEX["sky"]].mean(0))
        grass.append(image[scene.labels == world.CONCEPT_INDEX["grass"]].mean(0))
    sky_rgb, grass_rgb = np.mean(sky, 0), np.mean(grass, 0)
    assert sky_rgb[2] > grass_rgb[2] + 60
    assert grass_rgb[1] > grass_rgb[2] + 30 and grass_rgb[1] > grass_rgb[0]


def test_door_pixels_are_flat_and_darker_than_their_wall(scenes):
    """A door is painted in one colour: its pixels vary little, and doors are darker than the walls around them."""
    ratios, darker, doors = [], 0, 0
    for scene in scenes:
        image = scene.image.astype(np.float64)
        size = scene.labels.shape[0]
        for obj in scene.objects:
            if obj.concept != "door":
                continue
            x0, y0, x1, y1 = obj.box
            rows = slice(int(np.ceil(y0 * size - 0.5)), int(np.ceil(y1 * size - 0.5)))
            cols = slice(int(np.ceil(x0 * size - 0.5)), int(np.ceil(x1 * size - 0.5)))
            door = image[rows, cols][scene.labels[rows, cols] == world.CONCEPT_INDEX["door"]]
            hx0, hy0, hx1, hy1 = scene.objects[obj.host].box
            hrows = slice(int(np.ceil(hy0 * size - 0.5)), int(np.ceil(hy1 * size - 0.5)))
            hcols = slice(int(np.ceil(hx0 * size - 0.5)), int(np.ceil(hx1 * size - 0.5)))
            wall = image[hrows, hcols][scene.labels[hrows, hcols] == world.CONCEPT_INDEX["building"]]
            if len(door) < 4 or len(wall) < 4:
                continue
            doors += 1
            ratios.append(door.std(0).mean() / image.reshape(-1, 3).std(0).mean())
            darker += door.mean() < wall.mean()
    assert doors > 20
    assert np.median(ratios) < 0.25
    assert darker >= 0.95 * doors


def test_rendering_is_fast():
    world.render(0, SIZE)
    start = time.perf_counter()
    world.render_batch(range(1000, 1200), SIZE)
    assert time.perf_counter() - start < 5.0
