"""Schemathesis over the painter's OpenAPI schema: generated requests, valid and invalid, against the app on the
scenes64 run. No answer is a server error, and every answer conforms to the schema (status code, content type,
headers, body)."""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from gandissect.viz.painter.app import create_app
from gandissect.viz.painter.loader import open_painter

EXAMPLES = int(os.environ.get("GANDISSECT_FUZZ_EXAMPLES", "25"))
RANDOM = os.environ.get("GANDISSECT_FUZZ_RANDOM") == "1"  # `make fuzz`: new random requests each run


@pytest.fixture(scope="module")
def painter(painter_run):
    return open_painter(painter_run)


@pytest.fixture(scope="module")
def painter_app(painter):
    return create_app(painter, allowed_hosts=("testserver",))  # the host name of schemathesis's ASGI client


@pytest.fixture(scope="module")
def painter_schema(painter_app):
    return schemathesis.openapi.from_asgi("/openapi.json", painter_app)


OPERATIONS = [("/api/info", "GET"), ("/api/concepts", "GET"), ("/api/sample", "GET"), ("/api/edit", "POST"),
              ("/api/concept-pixels", "POST")]
TAKES_INPUT = {"/api/sample", "/api/edit", "/api/concept-pixels"}


def test_the_schema_lists_every_endpoint_and_states_the_runs_limits(painter_app, painter):
    document = painter_app.openapi()
    assert set(document["paths"]) == {path for path, _ in OPERATIONS}
    schemas = document["components"]["schemas"]
    offered = {(action, name, layer): entry.direction(action) for name, concept in painter.concepts.items()
               for layer, entry in concept.layers.items() for action in ("remove", "add")
               if entry.direction(action).available}
    strokes = {name: schema for name, schema in schemas.items() if name.startswith("Stroke_")}
    assert offered and len(strokes) == len(offered)  # one stroke model per offered concept, direction and layer
    for schema in strokes.values():
        key = tuple(schema["properties"][field]["const"] for field in ("action", "concept"))
        layer = schema["properties"]["layer"]
        layer_name = layer["anyOf"][0]["const"] if "anyOf" in layer else layer["const"]
        direction = offered[(*key, layer_name)]
        default = painter.concepts[key[1]].default_layers[key[0]] == layer_name
        assert ("anyOf" in layer) is default  # the layer may be left out only at the direction's default layer
        strength = schema["properties"]["strength"]
        assert (strength["minimum"], strength["maximum"]) == (1, direction.max_strength)
        assert strength["default"] == direction.default_strength
        assert schema["additionalProperties"] is False and set(schema["required"]) >= {"action", "concept",
                                                                                        "points", "radius"}
        assert schema["properties"]["radius"]["maximum"] == 32
        assert [item["maximum"] for item in schema["properties"]["points"]["items"]["prefixItems"]] == [64, 64]
    assert schemas["EraseStroke"]["properties"]["action"]["const"] == "erase"
    edit = document["paths"]["/api/edit"]["post"]["responses"]
    assert set(edit) >= {"200", "413", "415", "422"} and "image/png" in edit["200"]["content"]
    assert edit["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/Error")
    for name in ("Concepts", "ConceptEntry", "LayerEntry", "DirectionEntry", "UnitEntry", "SetEntry"):
        assert schemas[name]["additionalProperties"] is False, name
    assert schemas["DirectionEntry"]["properties"]["source"]["enum"] == ["causal", "untested"]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda mode: mode.value)
@pytest.mark.parametrize("path, method", OPERATIONS)
def test_no_generated_request_breaks_the_server_or_the_schema(painter_schema, path, method, mode):
    """Positive requests must be accepted (2xx), negative ones refused (4xx); every answer conforms to the
    schema. (Schemathesis's pytest plugin does not run under this pytest, so Hypothesis is driven here.)"""
    if mode is GenerationMode.NEGATIVE and path not in TAKES_INPUT:
        pytest.skip("an operation without parameters or body has no invalid input")
    statuses: list[int] = []

    @given(case=painter_schema[path][method].as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck),
              derandomize=not RANDOM)  # the same requests on every CI run: a verdict never depends on luck
    def check(case):
        statuses.append(case.call_and_validate().status_code)

    check()
    assert statuses and all(status < 500 for status in statuses)
    if mode is GenerationMode.POSITIVE:
        assert all(status == 200 for status in statuses)
