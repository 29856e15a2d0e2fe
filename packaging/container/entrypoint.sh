#!/bin/sh
# The devicetrust image's entrypoint (docs/deploy.md, "The container image").
#
#   (no argument) | migrate-and-serve   migrate the database, then serve
#   migrate                             only migrate (a one-off job before a rollout)
#   serve                               only serve (replicas, when a job migrates)
#   serve-ingest                        the report ingest tier (granian; POST /agent/v2/report)
#   devicetrust ARGS...                 any devicetrust command (keys export, audit verify, ...)
#
# Extra arguments after migrate-and-serve or serve go to `devicetrust serve`.
# DEVICETRUST_BIND (0.0.0.0:8000), DEVICETRUST_WORKERS (2) and DEVICETRUST_THREADS (8)
# set the listener and the workers (gunicorn's, or the ingest tier's); every other setting is a DEVICETRUST_*
# variable or the TOML file DEVICETRUST_CONFIG names.
set -eu

devicetrust="${DEVICETRUST_BIN:-devicetrust}"
bind="${DEVICETRUST_BIND:-0.0.0.0:8000}"
host="${bind%:*}"
port="${bind##*:}"

serve() {
    exec "$devicetrust" serve --host "$host" --port "$port" \
        --workers "${DEVICETRUST_WORKERS:-2}" "$@"
}

serve_ingest() {
    exec "$devicetrust" serve-ingest --host "$host" --port "$port" \
        --workers "${DEVICETRUST_WORKERS:-2}" "$@"
}

mode="${1:-migrate-and-serve}"
[ "$#" -gt 0 ] && shift
case "$mode" in
    migrate-and-serve)
        "$devicetrust" migrate
        serve "$@"
        ;;
    migrate)
        exec "$devicetrust" migrate "$@"
        ;;
    serve)
        serve "$@"
        ;;
    serve-ingest)
        serve_ingest "$@"
        ;;
    devicetrust)
        exec "$devicetrust" "$@"
        ;;
    *)
        echo "devicetrust-entrypoint: unknown mode '$mode'; use migrate-and-serve (default)," \
            "migrate, serve, serve-ingest, or devicetrust ARGS..." >&2
        exit 2
        ;;
esac
