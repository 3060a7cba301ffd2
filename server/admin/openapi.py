"""The OpenAPI 3.1 document of the admin API, generated from the route declarations.

Nothing here is written by hand per route: paths, parameters, bodies, answers, scopes and
error statuses all come from the `Route`s (api.py) and their pydantic models, so the
document served at /api/v1/openapi.json is the code's own description. schemathesis
tests the live API against it (tests/server/admin/test_openapi.py).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from lmg.server.admin.api import ErrorBody, Route

REF = "#/components/schemas/{model}"
STATUS_TEXT = {200: "OK", 201: "Created", 400: "the input is wrong: the message names each field",
               401: "no valid token: send Authorization: Bearer lmg_...", 403: "the token lacks the scope",
               404: "no such resource", 409: "it exists already", 413: "body too large",
               415: "send the body as JSON", 503: "not ready"}


def _models(routes: list[Route]) -> list[type[BaseModel]]:
    seen: dict[type[BaseModel], None] = {ErrorBody: None}
    for route in routes:
        for model in (route.body_model, route.response_model):
            if isinstance(model, type) and issubclass(model, BaseModel):
                seen[model] = None
    return list(seen)


def _parameters(where: str, model: type[BaseModel] | None) -> list[dict[str, Any]]:
    if model is None:
        return []
    schema = model.model_json_schema(ref_template=REF)
    required = set(schema.get("required", ()))
    out = []
    for name, prop in schema.get("properties", {}).items():
        prop = dict(prop)
        description = prop.pop("description", None)
        prop.pop("title", None)
        param: dict[str, Any] = {"name": name, "in": where, "required": where == "path" or name in required,
                                 "schema": prop}
        if description:
            param["description"] = description
        out.append(param)
    return out


def _security(route: Route) -> list[dict[str, list[str]]]:
    return [] if route.scope is None else [{"bearer": []}]


def document(routes: list[Route], *, version: str) -> dict[str, Any]:
    """The whole document for `routes`."""
    models = _models(routes)
    refs, defs = models_json_schema([(m, "serialization") for m in models], ref_template=REF)
    schemas = defs.get("$defs", {})
    ref_of = {model: refs[(model, "serialization")] for model in models}
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        responses: dict[str, Any] = {}
        if route.response_content == "application/json":
            content = {}
            if route.response_model is not None:
                content = {"application/json": {"schema": ref_of[route.response_model]}}
            responses[str(route.status)] = {"description": STATUS_TEXT.get(route.status, "OK"), "content": content}
        else:
            kinds = ("image/jpeg", "image/png") if route.response_content.startswith("image/") else \
                (route.response_content,)
            binary = {"type": "string", "format": "binary"} if kinds[0].startswith("image/") else {"type": "string"}
            responses[str(route.status)] = {"description": STATUS_TEXT.get(route.status, "OK"),
                                            "content": {kind: {"schema": binary} for kind in kinds}}
        errors = set(route.errors)
        if route.scope is not None:
            errors |= {401, 403}
        if route.query_model is not None or route.body_model is not None:
            errors.add(400)
        if route.body_model is not None:
            errors |= {413, 415}
        for status in sorted(errors):
            responses[str(status)] = {"description": STATUS_TEXT.get(status, "error"),
                                      "content": {"application/json": {"schema": ref_of[ErrorBody]}}}
        operation: dict[str, Any] = {
            "operationId": route.operation_id(), "summary": route.summary, "tags": [route.tag],
            "parameters": _parameters("path", route.path_model) + _parameters("query", route.query_model),
            "responses": responses,
            "security": _security(route),
        }
        if route.scope is not None:
            operation["x-lmg-scope"] = route.scope
            operation["description"] = (route.description + " " if route.description else "") + \
                f"Needs a token with the `{route.scope}` scope." + \
                (" Operators' tokens only: a supervisor's (region-limited) token gets 403." if route.operators_only
                 else "")
        elif route.description:
            operation["description"] = route.description
        if route.body_model is not None:
            operation["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": ref_of[route.body_model]}}}
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "陇明公 gateway admin API", "version": version,
                 "description": "Operations API of a 陇明公 gateway node. Tokens: `lmg token create --name N "
                                "--scope read,write,pii`; send them as `Authorization: Bearer lmg_...`."},
        "paths": paths,
        "components": {"schemas": schemas,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                                      "description": "an API token, lmg_ and 43 characters"}}},
    }
