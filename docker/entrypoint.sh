#!/bin/sh
# Runs the given command (default: the service) after making sure the data directory exists.
# Everything else is configured through EMBED_* environment variables (see docker/.env.example).
set -eu
mkdir -p "${EMBED_DATA_DIR:-/data}"
exec "$@"
