"""The API only grows: every route, parameter, response code and schema property of the
first release's OpenAPI schema (tests/service/openapi_surface_v1.json, taken from the schema
before the platform/serving split) is still there."""

from __future__ import annotations

import json
from pathlib import Path

from service.main import create_app

BASELINE = Path(__file__).with_name("openapi_surface_v1.json")


def surface(doc: dict) -> dict:
    paths = {}
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            paths[f"{method.upper()} {path}"] = {
                "parameters": sorted(f"{p['in']}:{p['name']}" for p in op.get("parameters", [])),
                "responses": sorted(op.get("responses", {}))}
    schemas = {name: sorted(s.get("properties", {}))
               for name, s in doc["components"]["schemas"].items()}
    return {"paths": paths, "schemas": schemas}


def test_nothing_of_the_first_release_was_removed() -> None:
    old = json.loads(BASELINE.read_text())
    new = surface(create_app().openapi())
    for route, shape in old["paths"].items():
        assert route in new["paths"], f"route {route} was removed"
        for key in ("parameters", "responses"):
            gone = set(shape[key]) - set(new["paths"][route][key])
            assert not gone, f"{route}: {key} {sorted(gone)} removed"
    for name, props in old["schemas"].items():
        assert name in new["schemas"], f"schema {name} was removed"
        gone = set(props) - set(new["schemas"][name])
        assert not gone, f"schema {name}: properties {sorted(gone)} removed"
