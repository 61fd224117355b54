#!/usr/bin/env bash
# Helpers of the decoding stages (asr.sh stage 7, sllm.sh stage 6, mtbi.sh stage 5).

# merge_job_outputs DIR NJ FILE...: DIR/FILE made from DIR/FILE.1 .. DIR/FILE.NJ (the outputs of
# a decoding split over NJ jobs), sorted by utterance id.
merge_job_outputs() {
    local dir=$1 nj=$2 f j
    shift 2
    for f in "$@"; do
        for j in $(seq "${nj}"); do cat "${dir}/${f}.${j}"; done | sort -k1,1 > "${dir}/${f}"
    done
}

# config_summary FILE: the settings of a YAML file on one line, comments (whole-line and after a
# value: a '#' at the line start or after a blank) and blank lines left out (decode_info.yaml's
# "decoding:", which RESULTS.md shows as the decoding settings).
config_summary() {
    sed -e 's/^#.*//' -e 's/[[:space:]]#.*//' "$1" | grep -v '^\s*$' | tr '\n' ' ' | sed 's/  */ /g'
}
