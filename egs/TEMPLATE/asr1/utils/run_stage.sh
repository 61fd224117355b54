#!/usr/bin/env bash
# run_stage N NAME [FILE]: sources the stage script FILE (default: ${template_dir}/stages/N_NAME.sh)
# when N (3b counts as 3) is within [${stage}, ${stop_stage}], logs its start and end, and appends
# "N<TAB>NAME<TAB>seconds<TAB>date<TAB>command[<TAB>partial][<TAB>scope]" to ${timing_file}
# (write_results and mtbi_table put these stage times into RESULTS.md). A stage that only logged
# "skip: ..." and took under 2 s found its work done: it appends nothing, so RESULTS.md keeps the
# time of the run that did the work. One that logged a skip and worked longer did part of the work
# (e.g. one more system): its row says "partial" and its time adds to the earlier run's. A
# per-system stage is called as `stage_scope="${systems}" run_stage ...`: its row names them, and
# its time replaces only earlier runs of those systems (or fewer) and adds to runs of others. The
# stage script runs in the caller's scope; the locals here are prefixed so that it cannot overwrite
# them.
run_stage() {
    local _rs_n=$1 _rs_name=$2 _rs_file=${3:-${template_dir}/stages/$1_$2.sh} _rs_t0 _rs_sec _rs_skips
    local _rs_num=${1%%[!0-9]*}
    if [ "${_rs_num}" -lt "${stage}" ] || [ "${_rs_num}" -gt "${stop_stage}" ]; then return 0; fi
    log "stage ${_rs_n}: ${_rs_name}"
    _rs_t0=$(date +%s)
    _rs_skips=${_log_skips:-0}
    . "${_rs_file}"
    _rs_sec=$(($(date +%s) - _rs_t0))
    if [ "${_log_skips:-0}" -gt "${_rs_skips}" ] && [ "${_rs_sec}" -lt 2 ]; then
        log "stage ${_rs_n}: ${_rs_name} had nothing to do (its time from the run that did it is kept)"
        return 0
    fi
    local _rs_partial="" _rs_tail=""
    [ "${_log_skips:-0}" -gt "${_rs_skips}" ] && _rs_partial=partial
    if [ -n "${stage_scope:-}" ]; then
        _rs_tail=$'\t'"${_rs_partial}"$'\t'"$(echo ${stage_scope})"   # unquoted: one space between names
    elif [ -n "${_rs_partial}" ]; then
        _rs_tail=$'\t'"${_rs_partial}"
    fi
    printf '%s\t%s\t%d\t%s\t%s%s\n' "${_rs_n}" "${_rs_name}" "${_rs_sec}" "$(date -Iseconds)" "${recipe_cmd:-}" \
        "${_rs_tail}" >> "${timing_file}"
    log "stage ${_rs_n}: ${_rs_name} done"
}
