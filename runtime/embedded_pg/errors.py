"""The error every failure of the embedded cluster is reported as."""

from __future__ import annotations


class EmbeddedPostgresError(Exception):
    """The embedded PostgreSQL cluster could not be set up, started or found."""
