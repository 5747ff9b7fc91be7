"""The painter's HTTP API on a scenes64 run and a planted run: every endpoint, each bad input (4xx with a clear
message, and the server keeps serving), images against brute-force Trace + UnitEdit forwards, erasing,
locality, where units come from (the causal ranking of each direction, offered only with a significant unit set;
what is offered is read from the run's ace.json files, not hard-coded), static and report files, binding, and
concurrent clients."""

from __future__ import annotations

import io
import itertools
import json
import math
import shutil
import socket
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from gandissect.causal.sets import strengths
from gandissect.cli import main
from gandissect.core.edits import UnitEdit
from gandissect.core.errors import ConfigError
from gandissect.core.hooks import Trace
from gandissect.core.images import to_uint8
from gandissect.core.sampling import sample_z
from gandissect.core.segmenters import COLOR_PROTOTYPES
from gandissect.dissection import Dissection
from gandissect.viz.painter.app import create_app
from gandissect.viz.painter.engine import model_label
from gandissect.viz.painter.loader import open_painter
from gandissect.viz.painter.schema import concepts_document
from gandissect.viz.painter.server import ServerThread, bind_warning, is_loopback, open_socket
from gandissect.viz.painter.strokes import apply_erasers, stroke_mask
from gandissect.viz.painter.units import UnitFileError, concept_units
from tamper import rehash

PLANTED_SPEC = f"{Path(__file__).with_name('planted.py')}:PlantedGenerator"
LOCAL = "http://localhost"  # the painter answers only to loopback names
LINE = [[8.0, 20.0], [40.0, 28.0]]


@pytest.fixture(scope="module")
def painter(painter_run):
    return open_painter(painter_run)


@pytest.fixture(scope="module")
def client(painter):
    return TestClient(create_app(painter), base_url=LOCAL)


def picture(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))


def stroke(action: str = "remove", concept: str | None = "tree", **extra) -> dict:
    return {"action": action, "concept": concept, "points": LINE, "radius": 5.0, **extra}


def brute_mask(points: list[list[float]], radius: float, size: tuple[int, int]) -> torch.Tensor:
    """The stroke's region pixel by pixel: the centre within `radius` of a segment (or of the only point)."""
    segments = list(itertools.pairwise(points)) or [(points[0], points[0])]
    mask = torch.zeros(size)
    for i in range(size[0]):
        for j in range(size[1]):
            px, py = j + 0.5, i + 0.5
            for (ax, ay), (bx, by) in segments:
                dx, dy = bx - ax, by - ay
                along = 0.0 if dx == dy == 0 else ((px - ax) * dx + (py - ay) * dy) / (dx * dx + dy * dy)
                t = max(0.0, min(1.0, along))
                if math.hypot(px - ax - t * dx, py - ay - t * dy) <= radius:
                    mask[i, j] = 1
                    break
    return mask


def brute_image(generator, seed: int, edits: dict) -> np.ndarray:
    """The image of sample 0 of `seed` with the whole generator run under Trace edits."""
    with torch.inference_mode(), Trace(generator, edit=edits):
        return to_uint8(generator(sample_z(generator, seed, [0])))[0]


def ace_files(run: Path) -> dict[tuple[str, str], dict]:
    """{(layer, concept): ace.json} of the run's schema-2 files."""
    found = {}
    for path in sorted((run / "causal").glob("*/*/ace.json")):
        document = json.loads(path.read_text())
        if document.get("schema") == 2:
            found[(path.parent.parent.name, path.parent.name)] = document
    return found


RANKING = {"remove": "removal", "add": "insertion"}


def offered_units(document: dict, action: str) -> list[int] | None:
    """The units a direction offers by the file (its ranking's significant units), or None when the file has no
    significant unit set for it."""
    key = RANKING[action]
    units = document["rankings"][key]["significant"][:64]
    sets = document.get("sets")
    checked = any(entry["significant"] for entry in sets.get(key, [])) if sets is not None else bool(units)
    return units if checked and units else None


def offered(run: Path) -> dict[tuple[str, str, str], list[int]]:
    """{(action, concept, layer): units} of every direction with a significant unit set in the run's files."""
    return {(action, concept, layer): units for (layer, concept), document in ace_files(run).items()
            for action in RANKING if (units := offered_units(document, action)) is not None}


def values_of(document: dict) -> dict[int, float]:
    return {row["unit"]: row["value"] for row in document["units"]}


def default_stroke(client: TestClient, **extra) -> dict:
    """A stroke with the painter's opening brush along LINE."""
    tool = client.get("/api/concepts").json()["default"]
    return {"action": tool["action"], "concept": tool["concept"], "points": LINE, "radius": 5.0, **extra}


def ace_document(width: int, significant: dict[str, list[int]], values: list[float],
                 sets: str | None = "significant", samples: int = 16) -> dict:
    """A made-up schema-2 ace.json (the keys the painter reads, as `gandissect causal` writes them): every unit
    measured, `significant[ranking]` the significant units in ranking order, `values` the inserted values. Sets
    of the first 1, 2, 4, ... significant units: "significant" (removing / adding 10% per unit, up to 2 units,
    then 10%: the best is strength 2), "none" (measured, none significant), or None (no sets measured)."""
    rankings = {d: significant.get(d, []) for d in ("removal", "insertion", "ace")}
    rows = []
    for unit in range(width):
        effects = {}
        for d, units in rankings.items():
            mean = 0.05 - 0.001 * units.index(unit) if unit in units else 0.0
            effects[d] = {"mean": mean, "se": 0.01, "low": mean - 0.02, "high": mean + 0.02, "p": 0.5,
                          "p_adjusted": 0.01 if unit in units else 1.0, "significant": unit in units, "rank": 1}
        rows.append({"unit": unit, "value": values[unit], "iou": 0.0, "inserted": 0.0, "ablated": 0.0, "ace": 0.0,
                     "effects": effects})
    document = {"schema": 2, "samples": samples, "seed": 3, "units": rows,
                "rankings": {d: {"order": units + [u for u in range(width) if u not in units], "significant": units,
                                 "separated": []} for d, units in rankings.items()}}
    if sets is not None:
        document["sets"] = {}
        for d in ("removal", "insertion"):
            entries = []
            for n in strengths(len(rankings[d])):
                mean = (0.1 * n if n <= 2 else 0.1) if sets == "significant" else 0.01
                low = mean - 0.05 if sets == "significant" else -0.05
                key = "removed" if d == "removal" else "gained"
                entries.append({"strength": n, "units": rankings[d][:n], "samples": 8, "seed": 4, "share_before": 0.1,
                                key: {"mean": mean, "se": 0.02, "low": low, "high": mean + 0.05},
                                "significant": low > 0, "description": f"{d} {mean:.0%} (made up)"})
            if entries:
                document["sets"][d] = entries
    return document


# --- strokes as regions ------------------------------------------------------------------------------------


@pytest.mark.parametrize("points, radius", [([[3.0, 4.0]], 2.5), ([[24.0, 1.0], [1.0, 23.0]], 0.7),
                                            ([[0.0, 0.0], [20.0, 9.5], [20.0, 9.5], [5.0, 18.0]], 3.0)])
def test_stroke_mask_equals_the_pixelwise_definition(points, radius):
    assert torch.equal(stroke_mask(points, radius, (20, 24)), brute_mask(points, radius, (20, 24)))


def test_erasers_take_back_earlier_strokes_only():
    a, b, eraser = torch.zeros(4, 4), torch.ones(4, 4), torch.zeros(4, 4)
    a[:2] = 1
    eraser[:, :2] = 1
    out = apply_erasers([a, eraser, b], [False, True, False], [1.0, 0.5, 1.0])
    assert torch.equal(out[0], a * (1 - 0.5 * eraser))  # halved where erased, the rest kept
    assert torch.equal(out[2], b)  # a later stroke is not erased
    assert torch.equal(out[1], eraser) and torch.equal(a[:2], torch.ones(2, 4))  # nothing changed in place


# --- endpoints -----------------------------------------------------------------------------------------------


def test_info_names_the_run_folder_only_and_the_limits(client, painter_run):
    info = client.get("/api/info").json()
    assert info["run"] == painter_run.name and "/" not in info["run"]
    assert info["model"] == "scenes64" and info["image_size"] == [64, 64] and info["layers"] == ["layer3", "layer4"]
    assert info["max_seed"] == 2**31 - 1 and info["max_radius"] == 32
    assert info["report"] == "/report/report.html"


@pytest.mark.parametrize(("spec", "shown"), [
    ("scenes64", "scenes64"),
    ("/home/someone/models/mine.py:make", "mine.py:make"),
    ("progan:/home/someone/ckpt/churchoutdoor_lsun.pth,resolution=256", "progan:churchoutdoor_lsun.pth,resolution=256"),
    ("stylegan2:~/ckpt/church.pt,truncation=0.7,noise=random", "stylegan2:church.pt,truncation=0.7,noise=random"),
    ("progan:churchoutdoor", "progan:churchoutdoor"),
])
def test_the_model_is_shown_without_the_machines_folders(spec, shown):
    assert model_label(spec) == shown


def test_units_come_from_the_ranking_of_each_direction_and_only_with_a_significant_set(client, painter, painter_run):
    answer = client.get("/api/concepts").json()
    concepts = {c["name"]: c for c in answer["concepts"]}
    files = ace_files(painter_run)
    assert {concept for _, concept in files} == {"tree", "door", "sky"}
    for (layer, name), document in files.items():
        entry = next(e for e in concepts[name]["layers"] if e["layer"] == layer)
        rows = {row["unit"]: row for row in document["units"]}
        for action, key in RANKING.items():
            direction = entry[action]
            significant = document["rankings"][key]["significant"]
            assert direction["source"] == "causal" and direction["significant"] == len(significant)
            assert [u["unit"] for u in direction["units"]] == significant[:64]
            assert direction["checked"] is ("sets" in document)
            assert [u["score"] for u in direction["units"]] == [rows[u]["effects"][key]["mean"] for u in significant]
            assert [u["low"] for u in direction["units"]] == [rows[u]["effects"][key]["low"] for u in significant]
            assert [u["value"] for u in direction["units"]] == [rows[u]["value"] if action == "add" else None
                                                                for u in significant]
            sets = document.get("sets", {}).get(key, [])
            assert [(s["strength"], s["significant"], s["description"]) for s in direction["sets"]] == [
                (s["strength"], s["significant"], s["description"]) for s in sets]
            assert direction["available"] is (offered_units(document, action) is not None)
            assert (direction["reason"] is None) is direction["available"] and direction["hint"] is None
            assert concepts[name]["default_layers"][action] == (layer if direction["available"] else None)
    assert (painter_run / "causal/layer4/tree/units.json").is_file()  # there, and ignored: ace.json gives units


def test_concepts_with_only_iou_evidence_are_listed_untested_with_the_command_that_measures_them(client, painter):
    concepts = client.get("/api/concepts").json()["concepts"]
    result = painter.result
    untested = [(c["name"], e) for c in concepts for e in c["layers"] if e["remove"]["source"] == "untested"]
    assert untested and ("tree", "layer3") in {(name, e["layer"]) for name, e in untested}
    for name, entry in untested:
        outcome = result.layers[entry["layer"]].rules[result.label_rule()]
        assert bool((outcome.labels()[1] == result.concepts.index(name)).any())  # labelled by IoU there
        for action in RANKING:
            direction = entry[action]
            assert not direction["available"] and direction["units"] == [] and direction["max_strength"] == 0
            assert direction["hint"] == f"gandissect causal scenes64-run --layer {entry['layer']} --concept {name}"
            assert "IoU" in direction["evidence"] and direction["origins"][-1] == "IoU"  # shown beside the concept
    for concept in concepts:
        assert concept["available"] == any(e[a]["available"] for e in concept["layers"] for a in RANKING)
    # grouped by category in the segmenter's order, offered concepts first within a category
    categories = list(dict.fromkeys(result.categories))
    keys = [(categories.index(c["category"]), not c["available"], result.concepts.index(c["name"])) for c in concepts]
    assert keys == sorted(keys)


def test_the_painter_opens_on_the_removal_with_the_largest_held_out_effect(client, painter_run):
    answer = client.get("/api/concepts").json()
    default, result = answer["default"], Dissection.load(painter_run)

    def best(document: dict, action: str) -> float:
        return max(s[("removed" if action == "remove" else "gained")]["mean"]
                   for s in document["sets"].get(RANKING[action], []) if s["significant"])

    files = ace_files(painter_run)
    choices = [((action == "remove", result.categories[result.concepts.index(concept)] == "object",
                 best(files[(layer, concept)], action)), (concept, action, layer))
               for action, concept, layer in offered(painter_run)]
    assert choices, "the fixture offers no direction at all"
    assert (default["concept"], default["action"], default["layer"]) == max(choices)[1]
    document = files[(default["layer"], default["concept"])]
    sets = [s for s in document["sets"][RANKING[default["action"]]] if s["significant"]]
    assert default["strength"] == max(sets, key=lambda s: s["removed" if default["action"] == "remove"
                                                            else "gained"]["mean"])["strength"]


def test_edits_are_refused_where_no_significant_set_backs_them(client, painter, painter_run):
    concepts = client.get("/api/concepts").json()["concepts"]
    refused = [(c["name"], e["layer"], action, e[action]) for c in concepts for e in c["layers"]
               for action in RANKING if not e[action]["available"]]
    assert any(d["source"] == "untested" for *_, d in refused)
    for name, layer, action, direction in refused:
        body = {"seed": 0, "strokes": [stroke(action, name, layer=layer)]}
        response = client.post("/api/edit", json=body)
        detail = response.json()["detail"]
        assert response.status_code == 422 and "\n" not in detail, detail
        assert f"{action} {name} at {layer} is not offered" in detail and direction["reason"] in detail
        if direction["hint"]:
            assert f"`{direction['hint']}`" in detail
    for (action, name, layer), units in offered(painter_run).items():
        too_strong = {"seed": 0, "strokes": [stroke(action, name, layer=layer, strength=len(units) + 1)]}
        response = client.post("/api/edit", json=too_strong)
        assert response.status_code == 422
        assert response.json()["detail"] == (f"stroke 0: strength must lie in 1..{len(units)}, the significant units "
                                             f"of {action} {name} at {layer}; got {len(units) + 1}")


def test_sample_is_sample_zero_of_the_seed_and_the_same_every_time(client, painter):
    first = client.get("/api/sample", params={"seed": 11})
    assert np.array_equal(picture(first), brute_image(painter.generator, 11, {}))
    client.get("/api/sample", params={"seed": 12})
    assert client.get("/api/sample", params={"seed": 11}).content == first.content


def test_each_offered_stroke_equals_a_trace_and_unit_edit_forward_with_the_files_units_and_values(
        client, painter, painter_run):
    files = ace_files(painter_run)
    region = brute_mask(LINE, 5.0, (64, 64))
    assert offered(painter_run), "the fixture offers no direction at all"
    for (action, concept, layer), units in offered(painter_run).items():
        strength = len(units)
        response = client.post("/api/edit", json={"seed": 5, "strokes": [stroke(action, concept, strength=strength,
                                                                                 alpha=0.75)]})
        if action == "remove":
            edit = UnitEdit.ablate(units, region=region, alpha=0.75)
        else:  # the values ace.json measured the insertion ranking with
            values = values_of(files[(layer, concept)])
            edit = UnitEdit.insert(units, torch.tensor([values[u] for u in units]), region=region, alpha=0.75)
        assert np.array_equal(picture(response), brute_image(painter.generator, 5, {layer: edit})), (action, concept)
        records = json.loads(response.headers["x-gandissect-edit"])
        assert records == [{"action": action, "concept": concept, "layer": layer, "units": units, "alpha": 0.75,
                            "source": "causal", "ranking": RANKING[action]}]


@pytest.fixture(scope="module")
def two_layer_run(painter_run, tmp_path_factory):
    """A copy of the fixture run with a (made-up) schema-2 ace.json for tree at layer3 too."""
    run = tmp_path_factory.mktemp("two-layers") / "scenes64-run"
    shutil.copytree(painter_run, run)
    values = [0.5 + 0.1 * u for u in range(64)]
    write_json(run / "causal/layer3/tree/ace.json", ace_document(64, {"removal": [7, 3], "insertion": [5, 12, 40]},
                                                                 values))
    return run


def test_strokes_at_two_layers_equal_a_forward_with_both_edits(two_layer_run, painter_run):
    painter = open_painter(two_layer_run)
    client = TestClient(create_app(painter), base_url=LOCAL)
    tool = client.get("/api/concepts").json()["default"]
    second = [[50.0, 50.0], [60.0, 40.0]]
    body = {"seed": 9, "strokes": [stroke("add", "tree", layer="layer3", strength=2),
                                   {"action": tool["action"], "concept": tool["concept"], "layer": tool["layer"],
                                    "points": second, "radius": 7.0}]}
    response = client.post("/api/edit", json=body)
    units = offered(painter_run)[(tool["action"], tool["concept"], tool["layer"])][:tool["strength"]]
    assert tool["layer"] == "layer4" and tool["action"] == "remove"
    expected = brute_image(painter.generator, 9, {
        "layer3": UnitEdit.insert([5, 12], torch.tensor([0.5 + 0.1 * 5, 0.5 + 0.1 * 12]),
                                  region=brute_mask(LINE, 5.0, (64, 64))),
        "layer4": UnitEdit.ablate(units, region=brute_mask(second, 7.0, (64, 64)))})
    assert np.array_equal(picture(response), expected)
    assert [r["units"] for r in json.loads(response.headers["x-gandissect-edit"])] == [[5, 12], units]


def test_the_same_request_gives_the_same_bytes(client, painter_run):
    (first_action, first, _), *rest = offered(painter_run)
    second_action, second, _ = rest[0] if rest else (first_action, first, None)
    body = {"seed": 3, "strokes": [stroke(first_action, first), stroke(second_action, second, radius=9.0)]}
    first_answer = client.post("/api/edit", json=body)
    for seed in range(40, 75):  # more seeds than the cache holds, so seed 3 is computed afresh
        client.get("/api/sample", params={"seed": seed})
    assert client.post("/api/edit", json=body).content == first_answer.content
    assert first_answer.content != client.get("/api/sample", params={"seed": 3}).content


def test_erasing_the_whole_stroke_gives_back_the_unedited_image(client):
    sample = client.get("/api/sample", params={"seed": 4}).content
    painted = default_stroke(client)
    edited = client.post("/api/edit", json={"seed": 4, "strokes": [painted]}).content
    erase = {"action": "erase", "points": LINE, "radius": 5.0}
    erased = client.post("/api/edit", json={"seed": 4, "strokes": [painted, erase]})
    assert edited != sample and erased.content == sample
    assert json.loads(erased.headers["x-gandissect-edit"])[1] == {"action": "erase", "concept": None, "layer": None,
                                                                  "units": [], "alpha": 1.0, "source": None,
                                                                  "ranking": None}
    before = client.post("/api/edit", json={"seed": 4, "strokes": [erase, painted]}).content
    assert before == edited  # an eraser takes back only the strokes before it


def test_pixels_far_from_the_stroke_change_less_than_near_it(client):
    corner = default_stroke(client, points=[[4.0, 4.0], [14.0, 10.0]], radius=4.0)
    for seed in (0, 1, 2):
        before = picture(client.get("/api/sample", params={"seed": seed})).astype(float)
        after = picture(client.post("/api/edit", json={"seed": seed, "strokes": [corner]})).astype(float)
        change = np.abs(after - before).sum(2)
        assert change[40:, 40:].mean() < 0.1 * max(change[:16, :18].mean(), 1.0)


def test_concept_pixels_segment_the_image_before_and_after(client, painter):
    painted = default_stroke(client, radius=12.0)
    assert painted["action"] == "remove"
    body = {"seed": 1, "strokes": [painted]}
    shares = client.post("/api/concept-pixels", json=body).json()
    segmenter = painter._get_segmenter()
    with torch.inference_mode():
        labels = segmenter.segment(painter.generator(sample_z(painter.generator, 1, [0])))
    concepts = list(segmenter.concepts)
    expected = {concepts[c]: float((labels == c).any(1).float().mean()) for c in labels[labels >= 0].unique().tolist()}
    assert shares["before"] == pytest.approx({name: expected.get(name, 0.0) for name in shares["before"]})
    assert set(expected) <= set(shares["before"]) and set(shares["before"]) == set(shares["after"])
    assert shares["after"][painted["concept"]] < shares["before"][painted["concept"]]


# --- bad input -----------------------------------------------------------------------------------------------

BAD_STROKES = [  # (what changes in the opening brush's stroke, the message)
    ({"concept": "dragon"}, "unknown concept 'dragon'; concepts with a significant unit set: "),
    ({"layer": "layer9"}, "unknown layer 'layer9'; the run's layers: layer3, layer4"),
    ({"concept": "sun", "layer": "layer3"}, "'sun' has no units at layer3; it has evidence at layer4"),
    ({"concept": "sun"}, "is offered at no layer: no causal ranking measured at layer4; measure it with "
                         "`gandissect causal scenes64-run --layer layer4 --concept sun`"),
    ({"concept": None}, "needs a concept"),
    ({"points": [[65.0, 3.0]]}, "less than or equal to 64"),
    ({"points": [[3.0, -1.0]]}, "greater than or equal to 0"),
    ({"points": [[1.0, 2.0, 3.0]]}, "points.0"),
    ({"points": []}, "at least 1"),
    ({"points": [[1.0, 1.0]] * 257}, "at most 256"),
    ({"radius": 0}, "radius"),
    ({"radius": 33}, "radius"),
    ({"alpha": 1.5}, "alpha"),
    ({"strength": 0}, "strength must lie in 1.."),
    ({"strength": 65}, "strength must lie in 1.."),
    ({"action": "paint"}, "action"),
    ({"path": "/etc/passwd"}, "path"),
]
BAD_BODIES = [  # (body, status, message); "STROKE" is the opening brush's stroke
    ({"seed": 2, "strokes": ["STROKE"] * 33}, 422, "at most 32"),
    ({"seed": -1, "strokes": []}, 422, "seed"),
    ({"seed": 2**31, "strokes": []}, 422, "seed"),
    ({"seed": 2, "strokes": "tree"}, 422, "strokes"),
    ([1, 2], 422, "valid dictionary"),
]


@pytest.mark.parametrize("endpoint", ["/api/edit", "/api/concept-pixels"])
@pytest.mark.parametrize("change, message", BAD_STROKES)
def test_bad_strokes_get_a_clear_422_and_the_server_keeps_serving(client, endpoint, change, message):
    good = default_stroke(client)
    response = client.post(endpoint, json={"seed": 2, "strokes": [{**good, **change}]})
    assert response.status_code == 422 and message in response.json()["detail"], response.text
    assert isinstance(response.json()["detail"], str) and "\n" not in response.json()["detail"]
    assert client.post(endpoint, json={"seed": 2, "strokes": [good]}).status_code == 200


@pytest.mark.parametrize("endpoint", ["/api/edit", "/api/concept-pixels"])
@pytest.mark.parametrize("body, status, message", BAD_BODIES)
def test_bad_requests_get_a_clear_4xx_and_the_server_keeps_serving(client, endpoint, body, status, message):
    good = default_stroke(client)
    if isinstance(body, dict) and isinstance(body["strokes"], list):
        body = {**body, "strokes": [good for _ in body["strokes"]]}
    response = client.post(endpoint, json=body)
    assert response.status_code == status and message in response.json()["detail"], response.text
    assert isinstance(response.json()["detail"], str)
    assert client.post(endpoint, json={"seed": 2, "strokes": [good]}).status_code == 200


GOOD = {"seed": 2, "strokes": []}


@pytest.mark.parametrize("content, kind, status, message", [
    (b'{"seed": 2, "strokes": [', "application/json", 422, "not valid JSON"),
    (b'{"seed": NaN, "strokes": []}', "application/json", 422, "seed"),
    (b"", "application/json", 422, "body"),
    (json.dumps(GOOD).encode(), "text/plain", 415, "application/json"),
    (json.dumps(GOOD).encode(), "", 415, "application/json"),
    (b" " * (256 * 1024 + 1), "application/json", 413, "262144"),
])
def test_bodies_that_are_not_json_or_too_large_are_refused(client, content, kind, status, message):
    response = client.post("/api/edit", content=content, headers={"content-type": kind} if kind else {})
    assert response.status_code == status and message in response.json()["detail"], response.text
    assert client.post("/api/edit", json=GOOD).status_code == 200


@pytest.mark.parametrize("seed", ["-1", "2147483648", "abc", "1.5"])
def test_a_sample_seed_out_of_range_is_refused(client, seed):
    response = client.get("/api/sample", params={"seed": seed})
    assert response.status_code == 422 and response.json()["detail"].startswith("seed: ")
    assert client.get("/api/sample", params={"seed": "0"}).status_code == 200


def test_a_streamed_body_over_the_limit_is_refused_by_a_real_server(painter):
    with ServerThread(create_app(painter)) as server:
        chunks = (b" " * 65536 for _ in range(5))  # chunked: no Content-Length to check
        response = httpx.post(server.url + "/api/edit", content=chunks, headers={"content-type": "application/json"})
        assert response.status_code == 413 and "262144" in response.json()["detail"]
        assert httpx.post(server.url + "/api/edit", json=GOOD).status_code == 200


@pytest.mark.parametrize("bad, message", [
    ({"concept": "dragon"}, "unknown concept 'dragon'; concepts with a significant unit set: "),
    ({"concept": None}, "needs a concept"),
    ({"layer": "layer9"}, "unknown layer 'layer9'; the run's layers: layer3, layer4"),
    ({"concept": "sun", "layer": "layer3"}, "'sun' has no units at layer3; it has evidence at layer4"),
    ({"concept": "tree", "layer": "layer3"}, "at layer3 is not offered: no causal ranking measured at layer3; "
                                             "measure it with `gandissect causal scenes64-run --layer layer3"),
    ({"points": [(64.5, 1.0)]}, "0 <= x <= 64"),
    ({"points": [(1.0, 2.0, 3.0)]}, "pairs [x, y]"),
    ({"radius": 40.0}, "radius must lie in (0, 32.0]"),
    ({"alpha": 0.0}, "alpha must lie in (0, 1]"),
    ({"strength": 0}, "strength must lie in 1.."),
    ({"strength": 65}, "strength must lie in 1.."),
    ({"action": "paint"}, "action must be one of add, remove, erase"),
])
def test_the_engine_refuses_bad_strokes_in_one_line(painter, bad, message):
    from gandissect.viz.painter.engine import PainterError, Stroke

    tool = painter.default
    fields = {"action": tool.action, "points": [(3.0, 4.0)], "radius": 2.0, "concept": tool.concept, **bad}
    with pytest.raises(PainterError) as error:
        painter.plan(0, [Stroke(**fields)])
    assert str(error.value).startswith("stroke 0: ") and message in str(error.value)
    with pytest.raises(PainterError, match=r"seed must lie in 0\.\.2147483647"):
        painter.plan(-1, [])


# --- files, binding, the command -----------------------------------------------------------------------------


def raw_get(url: str, path: str) -> int:
    """The status of GET `path` sent byte for byte (no client normalises the dots)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    return int(reply.split(b" ")[1])


def test_only_static_files_and_the_report_are_served(painter, painter_run, tmp_path):
    static = tmp_path / "static"
    (static / "sub").mkdir(parents=True)
    (static / "index.html").write_text("<!doctype html><title>painter</title>")
    (static / "painter.js").write_text("export {};")
    (static / "sub" / "hidden.css").write_text("body {}")
    (tmp_path / "secret.txt").write_text("secret")
    client = TestClient(create_app(painter, static=static), base_url=LOCAL)
    assert client.get("/").text.startswith("<!doctype html>")
    js = client.get("/static/painter.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    report = client.get("/report/report.html")
    assert report.status_code == 200 and report.content == (painter_run / "report.html").read_bytes()
    for path in ["/static/sub/hidden.css", "/static/..%2Fsecret.txt", "/static/%2e%2e%2fsecret.txt",
                 "/report/dissect.json", "/report/..%2Fdissect.json", "/report/statistics.safetensors",
                 "/static/.", "/static/sub"]:
        assert client.get(path).status_code == 404, path
    with ServerThread(create_app(painter, static=static)) as server:
        for path in ["/static/../secret.txt", "/static/../../painter/app.py", "/report/../dissect.json",
                     "/report/../../etc/passwd", "/static/%2e%2e/secret.txt", "/report/%2e%2e/run.json"]:
            assert raw_get(server.url, path) == 404, path
        assert raw_get(server.url, "/static/painter.js") == 200


def test_a_missing_front_end_is_a_404_not_a_crash(painter, tmp_path):
    client = TestClient(create_app(painter, static=tmp_path / "none"), base_url=LOCAL)
    response = client.get("/")
    assert response.status_code == 404 and "index.html" in response.json()["detail"]


@pytest.mark.parametrize("host, local", [("127.0.0.1", True), ("127.3.2.1", True), ("localhost", True),
                                         ("::1", True), ("[::1]", True), ("0.0.0.0", False), ("::", False),
                                         ("192.168.1.20", False), ("example.org", False)])
def test_only_loopback_hosts_bind_without_a_warning(host, local):
    assert is_loopback(host) is local
    assert (bind_warning(host) is None) is local
    if not local:
        assert host in bind_warning(host) and "127.0.0.1" in bind_warning(host)


def test_paint_binds_loopback_by_default_and_warns_for_any_other_host(painter_run, monkeypatch, capsys):
    import gandissect.viz.painter.server as server

    served = []
    monkeypatch.setattr(server, "serve", lambda app, sock: served.append(sock.getsockname()))
    previous = torch.get_num_threads()
    try:
        assert main(["paint", str(painter_run), "--port", "0"]) == 0
        out = capsys.readouterr()
        assert served[-1][0] == "127.0.0.1" and f"http://127.0.0.1:{served[-1][1]}/" in out.out
        assert "warning" not in out.err
        assert main(["paint", str(painter_run), "--host", "0.0.0.0", "--port", "0"]) == 0
        out = capsys.readouterr()
        assert served[-1][0] == "0.0.0.0" and "warning: binding to 0.0.0.0" in out.err
    finally:
        torch.set_num_threads(previous)


def test_the_server_socket_is_tcp_so_answers_are_not_held_back_by_nagle():
    sock = open_socket("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP  # asyncio sets TCP_NODELAY only on such sockets: else +40 ms
        sock.listen()
        with pytest.raises(ConfigError, match=r"cannot listen on 127\.0\.0\.1:\d+ .*--port"):
            open_socket("127.0.0.1", sock.getsockname()[1]).close()
    finally:
        sock.close()


def test_paint_serves_from_a_real_process_and_stops_cleanly_on_ctrl_c(painter_run):
    import signal
    import subprocess
    import sys

    import httpx

    process = subprocess.Popen([sys.executable, "-m", "gandissect.cli", "paint", str(painter_run), "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        line = process.stdout.readline()
        url = line.split()[-4]
        assert url.startswith("http://127.0.0.1:"), line
        assert httpx.get(f"{url}api/info", timeout=30).json()["run"] == painter_run.name
    finally:
        process.send_signal(signal.SIGINT)
        _, error = process.communicate(timeout=30)
    assert process.returncode == 0 and "painter stopped" in error
    assert "Traceback" not in error and "--resume" not in error


def test_paint_without_a_dissection_is_a_one_line_error(tmp_path, capsys):
    assert main(["paint", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "holds no finished run (no run.json)" in error


# --- the planted model: exact locality and the significance gate ---------------------------------------------


@pytest.fixture(scope="module")
def planted_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("painter-planted") / "run"
    assert main(["dissect", "--model", PLANTED_SPEC, "--segmenter", "color", "--layers", "features", "--samples",
                 "64", "--quantile", "0.15", "--no-report", "--out", str(out)]) == 0
    return out


def write_json(path: Path, document: dict) -> None:
    """Write a run's causal file and list it in the run's run.json, as the causal commands do."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))
    rehash(next(p for p in path.parents if (p / "run.json").is_file()), add=True)


PLANTED_VALUES = [1.0, 1.0, 1.0, 0.25, 0.75]


def test_on_the_planted_model_only_cells_under_the_stroke_change(planted_folder, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(planted_folder, run)
    write_json(run / "causal/features/blue/ace.json", ace_document(5, {"removal": [2], "insertion": [2]},
                                                                   PLANTED_VALUES))
    client = TestClient(create_app(open_painter(run, model=PLANTED_SPEC)), base_url=LOCAL)
    band = {"action": "remove", "concept": "blue", "strength": 1, "points": [[4.0, 2.0], [4.0, 30.0]], "radius": 4.5}
    blue = (np.array(COLOR_PROTOTYPES["blue"]) * 255).round()
    changed = 0
    for seed in range(8):
        before = picture(client.get("/api/sample", params={"seed": seed}))
        response = client.post("/api/edit", json={"seed": seed, "strokes": [band]})
        after = picture(response)
        assert json.loads(response.headers["x-gandissect-edit"])[0]["units"] == [2]  # the planted blue unit
        assert np.array_equal(before[:, 8:], after[:, 8:])  # the two columns of 4-pixel cells under the band only
        assert not (np.abs(after[:, :8] - blue).max(2) <= 1).any()  # where blue is gone
        changed += int((before[:, :8] != after[:, :8]).any())
    assert changed > 0


def blue(run: Path, result: Dissection):
    return concept_units(run, result)["blue"].layers["features"]


def test_only_a_significant_unit_set_of_a_schema_2_ace_json_is_painted_with(planted_folder, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(planted_folder, run)
    result = Dissection.load(run)  # the planted run is small: this is quick
    folder = run / "causal" / "features" / "blue"
    command = "gandissect causal run --layer features --concept blue"
    entry = blue(run, result)  # IoU only: shown, untested, with the command that measures it
    assert entry.remove.source == entry.add.source == "untested" and not entry.remove.available
    assert entry.remove.hint == command and "IoU" in entry.remove.evidence and entry.remove.units == ()
    assert entry.remove.origins == entry.add.origins == ("IoU",)
    write_json(folder / "ace.json", {"units": [{"unit": 2, "ace": 0.5}]})  # an older gandissect's file
    write_json(folder / "units.json", {"ranking": [2, 0, 1, 3, 4], "alpha": [0.3, 0.9, 1.0, 0.0, 0.0]})
    entry = blue(run, result)
    assert entry.add.source == "untested" and "older gandissect" in entry.add.evidence
    assert "units.json" in entry.add.evidence and entry.add.hint == command
    assert entry.add.origins == ("older causal ranking", "optimised", "IoU")

    write_json(folder / "ace.json", ace_document(5, {"removal": [2, 0, 4], "insertion": [2, 3]}, PLANTED_VALUES))
    entry = blue(run, result)  # schema 2 with significant sets: each direction its own ranking
    assert (entry.remove.source, entry.remove.top(3), entry.add.top(2)) == ("causal", [2, 0, 4], [2, 3])
    assert entry.remove.origins == entry.add.origins == ("causal ranking",)  # units.json is ignored
    assert [c.value for c in entry.add.units] == [1.0, 0.25] and entry.remove.units[0].value is None
    assert entry.remove.default_strength == 2 and entry.add.default_strength == 2  # the best held-out set
    assert [s.strength for s in entry.remove.sets] == [1, 2, 3] and entry.remove.figure(1).strength == 1
    assert entry.remove.figure(3).strength == 3 and entry.remove.figure(2).description == "removal 20% (made up)"
    client = TestClient(create_app(open_painter(run, model=PLANTED_SPEC)), base_url=LOCAL)
    line = {"points": [[1.0, 1.0]], "radius": 2.0, "concept": "blue"}
    response = client.post("/api/edit", json={"seed": 0, "strokes": [{"action": "add", **line}]})
    assert json.loads(response.headers["x-gandissect-edit"])[0]["units"] == [2, 3]  # default: the best set
    response = client.post("/api/edit", json={"seed": 0, "strokes": [{"action": "remove", "strength": 4, **line}]})
    assert response.status_code == 422 and response.json()["detail"] == (
        "stroke 0: strength must lie in 1..3, the significant units of remove blue at features; got 4")

    write_json(folder / "ace.json", ace_document(5, {"removal": [2, 0], "insertion": []}, PLANTED_VALUES, "none"))
    entry = blue(run, result)  # significant units, but no set of them is significant on held-out samples
    assert entry.remove.source == "causal" and not entry.remove.available and entry.remove.top(2) == [2, 0]
    assert "no significant set" in entry.remove.reason and entry.remove.hint is None
    assert not entry.add.available and "no unit of features adds blue significantly" in entry.add.reason
    client = TestClient(create_app(open_painter(run, model=PLANTED_SPEC)), base_url=LOCAL)
    response = client.post("/api/edit", json={"seed": 0, "strokes": [{"action": "remove", **line}]})
    assert response.status_code == 422 and "remove blue is offered at no layer" in response.json()["detail"]
    assert client.get("/api/concepts").json()["default"] is None

    write_json(folder / "ace.json", ace_document(5, {"removal": [2, 0]}, PLANTED_VALUES, None))
    entry = blue(run, result)  # no sets measured (--set-samples 0): significant units suffice, unchecked
    assert entry.remove.available and entry.remove.sets is None and entry.remove.default_strength == 2
    assert not entry.add.available

    document = ace_document(5, {"removal": [2, 0]}, PLANTED_VALUES)
    document["sets"]["removal"][1]["units"] = [0, 2]
    write_json(folder / "ace.json", document)
    with pytest.raises(UnitFileError, match=r"not the first 2 significant units"):
        concept_units(run, result)
    document = ace_document(5, {"removal": [2, 0]}, PLANTED_VALUES)
    document["rankings"]["removal"]["significant"] = [9]
    write_json(folder / "ace.json", document)
    with pytest.raises(UnitFileError, match=r"ace\.json.*layer 'features' has units 0\.\.4"):
        concept_units(run, result)


# --- concurrency -----------------------------------------------------------------------------------------------


def test_concurrent_clients_never_see_each_others_edits(painter, painter_run):
    choices = list(offered(painter_run))
    bodies = [{"seed": seed, "strokes": [stroke(*choices[seed % len(choices)][:2])]} for seed in range(4)]
    with ServerThread(create_app(painter)) as server:
        alone = [httpx.post(server.url + "/api/edit", json=body).content for body in bodies]
        got: dict[int, list[bytes]] = {i: [] for i in range(len(bodies))}

        def client_loop(i: int) -> None:
            with httpx.Client(base_url=server.url) as http:
                for _ in range(8):
                    got[i].append(http.post("/api/edit", json=bodies[i]).content)

        threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(len(bodies))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert all(content == alone[i] for i, contents in got.items() for content in contents)
    assert len(set(alone)) == len(alone)


def test_the_opening_brush_prefers_a_visible_concept_removed_on_held_out_samples():
    from gandissect.viz.painter.units import ConceptUnits, Direction, LayerUnits, SetFigure, UnitChoice, default_tool

    def concept(name: str, removed: float, share: float, add: float | None = None) -> ConceptUnits:
        def direction(action: str, mean: float | None) -> Direction:
            if mean is None:
                return Direction(action, "causal", "no set", reason="no significant set")
            figure = SetFigure(1, mean, 0.01, mean - 0.02, mean + 0.02, True, 16, "", share)
            return Direction(action, "causal", "ranking", (UnitChoice(3, 0.1),), 1, (figure,))

        layer = LayerUnits("layer4", direction("remove", removed), direction("add", add))
        return ConceptUnits(name, "object", {"layer4": layer}, {"remove": "layer4", "add": "layer4" if add else None})

    tiny_but_complete = concept("sun", 0.95, 0.004)
    visible = concept("tree", 0.5, 0.05, add=0.9)
    chosen = default_tool({"sun": tiny_but_complete, "tree": visible})
    assert (chosen.concept, chosen.action, chosen.layer, chosen.strength) == ("tree", "remove", "layer4", 1)
    assert default_tool({"sun": tiny_but_complete}).concept == "sun"  # still offered when it is all there is
    assert default_tool({}) is None


@pytest.mark.parametrize("host", ["localhost", "localhost:8000", "127.0.0.1:8000", "[::1]:8000", "LOCALHOST"])
def test_the_painter_answers_its_own_loopback_names(client, host):
    assert client.get("/api/info", headers={"host": host}).status_code == 200


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "127.0.0.1.evil.example", "", "10.0.0.2"])
def test_a_page_that_rebinds_its_name_to_this_machine_is_refused(client, host):
    for method, path in (("GET", "/api/info"), ("GET", "/"), ("POST", "/api/edit"), ("GET", "/report/report.html")):
        response = client.request(method, path, headers={"host": host}, json={"seed": 0, "strokes": []})
        assert response.status_code == 421, (method, path, host)
        assert "answers only to" in response.json()["detail"]


def test_more_host_names_are_allowed_only_when_asked(painter):
    allowed = TestClient(create_app(painter, allowed_hosts=("painter.lan",)), base_url="http://painter.lan:8000")
    assert allowed.get("/api/info").status_code == 200
    assert allowed.get("/api/info", headers={"host": "other.lan"}).status_code == 421


def test_every_answer_says_nosniff_and_allows_only_its_own_origin(client):
    for path in ("/", "/api/info", "/api/concepts", "/static/painter.js", "/api/sample?seed=1", "/nothing"):
        response = client.get(path)
        assert response.headers["x-content-type-options"] == "nosniff", path
        policy = response.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy and "unsafe" not in policy
    report = client.get("/report/report.html")
    assert report.status_code == 200 and "default-src 'none'" in report.headers["content-security-policy"]
    assert "connect-src" not in report.headers["content-security-policy"]  # the report may reach no server


@pytest.mark.parametrize(("field", "value"), [("alpha", True), ("alpha", "0.5"), ("radius", False),
                                              ("radius", "3"), ("strength", True), ("strength", "1")])
def test_json_types_are_strict(client, painter, field, value):
    tool = concepts_document(painter)["default"]
    stroke = {"action": tool["action"], "concept": tool["concept"], "layer": tool["layer"], "strength": 1,
              "alpha": 1.0, "radius": 3.0, "points": [[10.0, 10.0]], field: value}
    response = client.post("/api/edit", json={"seed": 1, "strokes": [stroke]})
    assert response.status_code == 422 and field in response.json()["detail"]
    for seed in (True, "1"):
        assert client.post("/api/edit", json={"seed": seed, "strokes": []}).status_code == 422
    assert client.post("/api/edit", json={"seed": 1.0, "strokes": []}).status_code == 200  # JSON's integer 1
