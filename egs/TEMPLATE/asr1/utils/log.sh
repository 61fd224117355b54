#!/usr/bin/env bash
# log "message": timestamped, with the calling script's name, to stderr.
# Messages starting with "skip:" are counted in _log_skips (run_stage uses it to tell a stage
# that found its work done from one that did it).
log() {
    case "$*" in skip:*) _log_skips=$(( ${_log_skips:-0} + 1 )) ;; esac
    echo "$(date '+%Y-%m-%d %H:%M:%S') ($(basename "${BASH_SOURCE[1]}"):${BASH_LINENO[0]}) $*" >&2
}
