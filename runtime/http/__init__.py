"""The HTTP face of the runtime: Starlette routes, error responses, the ASGI app factory."""
