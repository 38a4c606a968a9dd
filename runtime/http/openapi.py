"""`GET /openapi.json`, generated from schema.json's function entries."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from runtime import __version__
from runtime.engine import Runtime
from runtime.http.functions import describe_functions
from runtime.http.responses import json_response

ERROR = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "details": {},
            },
            "required": ["code", "message"],
        }
    },
}


def openapi_document(runtime: Runtime) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for fn in describe_functions(runtime):
        value_schema = fn["returns"] or {}
        paths[f"/fn/{fn['name']}"] = {
            "post": {
                "operationId": fn["name"],
                "summary": f"{fn['kind']} {fn['name']}",
                "security": [] if fn["public"] else [{"bearer": []}],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": fn["args"]}},
                },
                "responses": {
                    "200": {
                        "description": "The function's return value",
                        "content": {
                            "application/json": {
                                "schema": {"type": "object", "properties": {"value": value_schema}}
                            }
                        },
                    },
                    "default": {
                        "description": "An error (DESIGN §6)",
                        "content": {"application/json": {"schema": ERROR}},
                    },
                },
            }
        }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Swarm Runtime", "version": __version__},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": paths,
    }


async def openapi(request: Request) -> Response:
    return json_response(openapi_document(request.app.state.runtime))
