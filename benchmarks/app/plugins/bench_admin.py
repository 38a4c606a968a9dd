"""Lets the benchmark read `/_runtime/status`: `Authorization: Bearer <BENCH_ADMIN_TOKEN>`.

The benchmark sets BENCH_ADMIN_TOKEN to a random value per run; without it nobody matches.
Calls to the public bench functions carry no Authorization header, so this hook costs them
one header lookup (what any auth plugin costs a public call).
"""

import hmac
import os

from runtime import Identity, hookimpl

_TOKEN = os.environ.get("BENCH_ADMIN_TOKEN", "")


@hookimpl
async def authenticate(request, runtime):
    header = request.headers.get("authorization")
    if not _TOKEN or header is None or not header.startswith("Bearer "):
        return None
    if hmac.compare_digest(header[7:].encode(), _TOKEN.encode()):
        return Identity(user_id="bench", roles=("admin",), kind="system")
    return None
