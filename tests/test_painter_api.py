"""The painter's HTTP API on a scenes64 run and a planted run: every endpoint, each bad input (4xx with a clear
message, and the server keeps serving), images against brute-force Trace + UnitEdit forwards, erasing,
locality, the source of unit rankings, static and report files, binding, and concurrent clients."""

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
from gandissect.viz.painter.server import ServerThread, bind_warning, is_loopback, open_socket
from gandissect.viz.painter.strokes import apply_erasers, stroke_mask
from gandissect.viz.painter.units import UnitFileError, concept_units

PLANTED_SPEC = f"{Path(__file__).with_name('planted.py')}:PlantedGenerator"
LINE = [[8.0, 20.0], [40.0, 28.0]]


@pytest.fixture(scope="module")
def painter(painter_run):
    return open_painter(painter_run)


@pytest.fixture(scope="module")
def client(painter):
    return TestClient(create_app(painter))


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


def test_concepts_come_from_units_json_then_ace_json_then_iou(client, painter, painter_run):
    concepts = {c["name"]: c for c in client.get("/api/concepts").json()["concepts"]}
    folder = painter_run / "causal" / "layer4"
    tree = {entry["layer"]: entry for entry in concepts["tree"]["layers"]}
    optimized = json.loads((folder / "tree" / "units.json").read_text())
    assert concepts["tree"]["default_layer"] == "layer4" and tree["layer4"]["source"] == "alpha"
    assert [u["unit"] for u in tree["layer4"]["units"]] == optimized["units"][:64]
    assert [u["alpha"] for u in tree["layer4"]["units"]] == [optimized["alpha"][u] for u in optimized["units"][:64]]
    door = {entry["layer"]: entry for entry in concepts["door"]["layers"]}
    rows = json.loads((folder / "door" / "ace.json").read_text())["units"]
    assert door["layer4"]["source"] == "ace" and concepts["door"]["default_layer"] == "layer4"
    assert [u["unit"] for u in door["layer4"]["units"]] == [r["unit"] for r in rows if r["ace"] > 0]
    result = painter.result  # Dissection.load(painter_run)
    iou = result.layers["layer3"].rules[result.label_rule()].iou[:, result.concepts.index("tree")]
    assert tree["layer3"]["source"] == "iou"
    assert [u["unit"] for u in tree["layer3"]["units"]] == [u for u in iou.argsort(descending=True).tolist()
                                                             if iou[u] > 0][:64]
    for concept in concepts.values():
        for entry in concept["layers"]:
            scores = [u["score"] for u in entry["units"]]
            assert scores == sorted(scores, reverse=True) or entry["source"] == "alpha"
            assert entry["max_strength"] == len(entry["units"]) <= 64


def test_sample_is_sample_zero_of_the_seed_and_the_same_every_time(client, painter):
    first = client.get("/api/sample", params={"seed": 11})
    assert np.array_equal(picture(first), brute_image(painter.generator, 11, {}))
    client.get("/api/sample", params={"seed": 12})
    assert client.get("/api/sample", params={"seed": 11}).content == first.content


def test_one_stroke_equals_a_trace_and_unit_edit_forward(client, painter, painter_run):
    response = client.post("/api/edit", json={"seed": 5, "strokes": [stroke(strength=6, alpha=0.75)]})
    units = json.loads((painter_run / "causal/layer4/tree/units.json").read_text())["units"][:6]
    expected = brute_image(painter.generator, 5,
                           {"layer4": UnitEdit.ablate(units, region=brute_mask(LINE, 5.0, (64, 64)), alpha=0.75)})
    assert np.array_equal(picture(response), expected)
    records = json.loads(response.headers["x-gandissect-edit"])
    assert records == [{"action": "remove", "concept": "tree", "layer": "layer4", "units": units, "alpha": 0.75}]


def test_strokes_at_two_layers_equal_a_forward_with_both_edits(client, painter, painter_run):
    result = painter.result  # Dissection.load(painter_run)
    tree = result.concepts.index("tree")
    iou = result.layers["layer3"].rules[result.label_rule()].iou[:, tree]
    units3 = iou.argsort(descending=True).tolist()[:4]
    values = result.statistics["condmean/layer3"].mean()[:, tree].float()
    second = [[50.0, 50.0], [60.0, 40.0]]
    body = {"seed": 9, "strokes": [stroke("add", layer="layer3", strength=4),
                                   {"action": "remove", "concept": "door", "points": second, "radius": 7.0}]}
    response = client.post("/api/edit", json=body)
    door = [r["unit"] for r in json.loads((painter_run / "causal/layer4/door/ace.json").read_text())["units"]
            if r["ace"] > 0][:10]
    expected = brute_image(painter.generator, 9, {
        "layer3": UnitEdit.insert(units3, values[units3], region=brute_mask(LINE, 5.0, (64, 64))),
        "layer4": UnitEdit.ablate(door, region=brute_mask(second, 7.0, (64, 64)))})
    assert np.array_equal(picture(response), expected)
    assert [r["units"] for r in json.loads(response.headers["x-gandissect-edit"])] == [units3, door]


def test_the_same_request_gives_the_same_bytes(client):
    body = {"seed": 3, "strokes": [stroke("add", "tree", strength=8), stroke("remove", "door", radius=9.0)]}
    first = client.post("/api/edit", json=body)
    for seed in range(40, 75):  # more seeds than the cache holds, so seed 3 is computed afresh
        client.get("/api/sample", params={"seed": seed})
    assert client.post("/api/edit", json=body).content == first.content
    assert first.content != client.get("/api/sample", params={"seed": 3}).content


def test_erasing_the_whole_stroke_gives_back_the_unedited_image(client):
    sample = client.get("/api/sample", params={"seed": 4}).content
    edited = client.post("/api/edit", json={"seed": 4, "strokes": [stroke("add", strength=20)]}).content
    erase = {"action": "erase", "points": LINE, "radius": 5.0}
    erased = client.post("/api/edit", json={"seed": 4, "strokes": [stroke("add", strength=20), erase]})
    assert edited != sample and erased.content == sample
    assert json.loads(erased.headers["x-gandissect-edit"])[1] == {"action": "erase", "concept": None, "layer": None,
                                                                  "units": [], "alpha": 1.0}
    before = client.post("/api/edit", json={"seed": 4, "strokes": [erase, stroke("add", strength=20)]}).content
    assert before == edited  # an eraser takes back only the strokes before it


def test_pixels_far_from_the_stroke_change_less_than_near_it(client):
    corner = {"action": "remove", "concept": "tree", "strength": 30, "points": [[4.0, 4.0], [14.0, 10.0]],
              "radius": 4.0}
    for seed in (0, 1, 2):
        before = picture(client.get("/api/sample", params={"seed": seed})).astype(float)
        after = picture(client.post("/api/edit", json={"seed": seed, "strokes": [corner]})).astype(float)
        change = np.abs(after - before).sum(2)
        assert change[40:, 40:].mean() < 0.1 * max(change[:16, :18].mean(), 1.0)


def test_concept_pixels_segment_the_image_before_and_after(client, painter):
    body = {"seed": 1, "strokes": [stroke(strength=30, radius=12.0)]}
    shares = client.post("/api/concept-pixels", json=body).json()
    segmenter = painter._get_segmenter()
    with torch.inference_mode():
        labels = segmenter.segment(painter.generator(sample_z(painter.generator, 1, [0])))
    concepts = list(segmenter.concepts)
    expected = {concepts[c]: float((labels == c).any(1).float().mean()) for c in labels[labels >= 0].unique().tolist()}
    assert shares["before"] == pytest.approx({name: expected.get(name, 0.0) for name in shares["before"]})
    assert set(expected) <= set(shares["before"]) and set(shares["before"]) == set(shares["after"])
    assert shares["after"]["tree"] < shares["before"]["tree"]


# --- bad input -----------------------------------------------------------------------------------------------

GOOD = {"seed": 2, "strokes": [stroke()]}
BAD_BODIES = [
    ({"seed": 2, "strokes": [stroke(concept="dragon")]}, 422, "need a concept with units, one of: cloud, sun"),
    ({"seed": 2, "strokes": [stroke(layer="layer9")]}, 422, "'layer3'"),
    ({"seed": 2, "strokes": [stroke(concept="sun", layer="layer3")]}, 422, "sun.layer: Input should be 'layer4'"),
    ({"seed": 2, "strokes": [stroke(concept=None)]}, 422, "need a concept with units"),
    ({"seed": 2, "strokes": [stroke(points=[[65.0, 3.0]])]}, 422, "less than or equal to 64"),
    ({"seed": 2, "strokes": [stroke(points=[[3.0, -1.0]])]}, 422, "greater than or equal to 0"),
    ({"seed": 2, "strokes": [stroke(points=[[1.0, 2.0, 3.0]])]}, 422, "points.0"),
    ({"seed": 2, "strokes": [stroke(points=[])]}, 422, "at least 1"),
    ({"seed": 2, "strokes": [stroke(points=[[1.0, 1.0]] * 257)]}, 422, "at most 256"),
    ({"seed": 2, "strokes": [stroke()] * 33}, 422, "at most 32"),
    ({"seed": 2, "strokes": [stroke(radius=0)]}, 422, "radius"),
    ({"seed": 2, "strokes": [stroke(radius=33)]}, 422, "radius"),
    ({"seed": 2, "strokes": [stroke(alpha=1.5)]}, 422, "alpha"),
    ({"seed": 2, "strokes": [stroke(strength=0)]}, 422, "strength"),
    ({"seed": 2, "strokes": [stroke(action="paint")]}, 422, "action"),
    ({"seed": 2, "strokes": [stroke(path="/etc/passwd")]}, 422, "path"),
    ({"seed": -1, "strokes": []}, 422, "seed"),
    ({"seed": 2**31, "strokes": []}, 422, "seed"),
    ({"seed": 2, "strokes": "tree"}, 422, "strokes"),
    ([1, 2], 422, "valid dictionary"),
]


@pytest.mark.parametrize("endpoint", ["/api/edit", "/api/concept-pixels"])
@pytest.mark.parametrize("body, status, message", BAD_BODIES)
def test_bad_requests_get_a_clear_4xx_and_the_server_keeps_serving(client, endpoint, body, status, message):
    response = client.post(endpoint, json=body)
    assert response.status_code == status and message in response.json()["detail"], response.text
    assert isinstance(response.json()["detail"], str)
    assert client.post(endpoint, json=GOOD).status_code == 200


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
    ({"concept": "dragon"}, "unknown concept 'dragon'; concepts with units: cloud, sun"),
    ({"concept": None}, "remove needs a concept"),
    ({"layer": "layer9"}, "unknown layer 'layer9'; the run's layers: layer3, layer4"),
    ({"concept": "sun", "layer": "layer3"}, "'sun' has no units at layer3; it has units at layer4"),
    ({"points": [(64.5, 1.0)]}, "0 <= x <= 64"),
    ({"points": [(1.0, 2.0, 3.0)]}, "pairs [x, y]"),
    ({"radius": 40.0}, "radius must lie in (0, 32.0]"),
    ({"alpha": 0.0}, "alpha must lie in (0, 1]"),
    ({"strength": 0}, "strength must be at least 1"),
    ({"action": "paint"}, "action must be one of add, remove, erase"),
])
def test_the_engine_refuses_bad_strokes_in_one_line(painter, bad, message):
    from gandissect.viz.painter.engine import PainterError, Stroke

    fields = {"action": "remove", "points": [(3.0, 4.0)], "radius": 2.0, "concept": "tree", **bad}
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
    client = TestClient(create_app(painter, static=static))
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
    client = TestClient(create_app(painter, static=tmp_path / "none"))
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
    assert error.count("\n") == 1 and "no dissect.json" in error


# --- the planted model: exact locality and ranking sources ---------------------------------------------------


@pytest.fixture(scope="module")
def planted_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("painter-planted") / "run"
    assert main(["dissect", "--model", PLANTED_SPEC, "--segmenter", "color", "--layers", "features", "--samples",
                 "64", "--quantile", "0.15", "--no-report", "--out", str(out)]) == 0
    return out


def test_on_the_planted_model_only_cells_under_the_stroke_change(planted_folder):
    client = TestClient(create_app(open_painter(planted_folder)))
    concepts = {c["name"]: c for c in client.get("/api/concepts").json()["concepts"]}
    assert [u["unit"] for u in concepts["blue"]["layers"][0]["units"]][:1] == [2]  # the planted blue unit first
    band = {"action": "remove", "concept": "blue", "strength": 1, "points": [[4.0, 2.0], [4.0, 30.0]], "radius": 4.5}
    blue = (np.array(COLOR_PROTOTYPES["blue"]) * 255).round()
    changed = 0
    for seed in range(8):
        before = picture(client.get("/api/sample", params={"seed": seed}))
        after = picture(client.post("/api/edit", json={"seed": seed, "strokes": [band]}))
        assert np.array_equal(before[:, 8:], after[:, 8:])  # the two columns of 4-pixel cells under the band only
        assert not (np.abs(after[:, :8] - blue).max(2) <= 1).any()  # where blue is gone
        changed += int((before[:, :8] != after[:, :8]).any())
    assert changed > 0


def write_json(path: Path, document: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))


def test_ranking_source_precedence_with_planted_files(planted_folder, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(planted_folder, run)
    result = Dissection.load(run)  # the planted run is small: this is quick
    assert concept_units(run, result)["blue"].layers["features"].source == "iou"
    folder = run / "causal" / "features" / "blue"
    write_json(folder / "ace.json", {"units": [{"unit": 0, "ace": -0.1}, {"unit": 3, "ace": 0.2},
                                               {"unit": 4, "ace": 0.5}, {"unit": 1, "ace": 0.0}]})
    entry = concept_units(run, result)["blue"].layers["features"]
    assert entry.source == "ace" and [c.unit for c in entry.units] == [4, 3] and entry.units[0].score == 0.5
    write_json(folder / "units.json", {"ranking": [1, 0, 2, 3, 4], "alpha": [0.3, 0.9, 0.0, 0.005, 0.0],
                                       "cutoff": 0.01})
    entry = concept_units(run, result)["blue"].layers["features"]
    assert entry.source == "alpha" and [(c.unit, c.alpha) for c in entry.units] == [(1, 0.9), (0, 0.3)]
    client = TestClient(create_app(open_painter(run)))
    records = client.post("/api/edit", json={"seed": 0, "strokes": [
        {"action": "add", "concept": "blue", "strength": 5, "points": [[1.0, 1.0]], "radius": 2.0}]})
    assert json.loads(records.headers["x-gandissect-edit"])[0]["units"] == [1, 0]  # strength capped at the set
    write_json(folder / "units.json", {"ranking": [9], "alpha": [1.0]})
    with pytest.raises(UnitFileError, match=r"units\.json.*layer 'features' has units 0\.\.4"):
        concept_units(run, result)


# --- concurrency -----------------------------------------------------------------------------------------------


def test_concurrent_clients_never_see_each_others_edits(painter):
    bodies = [{"seed": seed, "strokes": [stroke(action, concept, strength=5 + seed)]}
              for seed, (action, concept) in enumerate([("add", "tree"), ("remove", "tree"), ("add", "door"),
                                                        ("remove", "door")])]
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
