#!/bin/sh
# Entrypoint of the Swarm Runtime image (see /Dockerfile).
#
#   (no arguments) | serve [flags]   -> swarm-runtime serve --host 0.0.0.0 --port 3210
#                                         --workers ${RUNTIME_WORKERS:-2} [flags]
#   migrate | check | backup | restore | ... [flags] -> swarm-runtime <command> [flags]
#   anything else (sh, python, ...)  -> executed as is
#
# Flags given after `serve` come last and therefore win over the defaults. The runtime is
# `exec`ed, so it is PID 1 and receives SIGTERM itself (it drains in-flight calls on it).
set -eu

require_database_url() {
    for arg in "$@"; do
        case "$arg" in --database-url|--database-url=*) return 0 ;; esac
    done
    if [ -z "${DATABASE_URL:-}" ]; then
        echo "swarm-runtime: DATABASE_URL is required in this image (production has no" \
             "embedded PostgreSQL); set it, e.g. postgresql://user:password@host:5432/db" >&2
        exit 64
    fi
}

if [ "$#" -eq 0 ]; then
    set -- serve
elif [ "${1#-}" != "$1" ]; then
    # Only flags were given: they are flags of `serve`.
    set -- serve "$@"
fi

case "$1" in
    serve)
        shift
        require_database_url "$@"
        exec swarm-runtime serve \
            --host "${RUNTIME_HOST:-0.0.0.0}" \
            --port "${RUNTIME_PORT:-3210}" \
            --workers "${RUNTIME_WORKERS:-2}" \
            "$@"
        ;;
    migrate|backup|restore)
        require_database_url "$@"
        exec swarm-runtime "$@"
        ;;
    check|dev)
        exec swarm-runtime "$@"
        ;;
    swarm-runtime)
        shift
        exec "$0" "$@"
        ;;
    *)
        exec "$@"
        ;;
esac
