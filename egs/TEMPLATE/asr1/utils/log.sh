#!/usr/bin/env bash
# log "message": timestamped, with the calling script's name, to stderr.
log() {
    echo "$(date '+%Y-%m-%d %H:%M:%S') ($(basename "${BASH_SOURCE[1]}"):${BASH_LINENO[0]}) $*" >&2
}
