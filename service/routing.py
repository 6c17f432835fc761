"""An application's API routes, flattened: included routers walked with their full paths."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import FastAPI, routing
from fastapi.routing import APIRoute


def api_routes(app: FastAPI) -> Iterator[tuple[str, set[str], APIRoute]]:
    """Every API route with its full path and methods (included routers flattened)."""
    for context in routing.iter_route_contexts(app.routes):
        route = context.original_route
        if isinstance(route, APIRoute) and context.path_format is not None:
            yield context.path_format, set(context.methods or ()), route
