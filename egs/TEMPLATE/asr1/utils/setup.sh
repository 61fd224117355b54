#!/usr/bin/env bash
# Sourced by the recipe templates (asr.sh, sllm.sh, mtbi.sh) right after their option defaults:
# the shared helpers (log, run_stage, set_train_launcher, merge_job_outputs, config_summary), the
# command line's --key value options (parse_options.sh), the recipe's path.sh and cmd.sh, and the
# local job launchers by default.
_setup_utils=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
. "${_setup_utils}/log.sh"
. "${_setup_utils}/parse_options.sh"
. "${_setup_utils}/train_launcher.sh"
. "${_setup_utils}/run_stage.sh"
. "${_setup_utils}/decode_jobs.sh"
unset _setup_utils
[ -f ./path.sh ] && . ./path.sh
[ -f ./cmd.sh ] && . ./cmd.sh
: "${train_cmd:=${MAIN_ROOT}/tools/launch/run_local.sh}"
: "${decode_cmd:=${MAIN_ROOT}/tools/launch/run_local.sh}"
