#!/usr/bin/env bash
# LibriSpeech data preparation: download, Kaldi data dirs per part, the combined training set.
#
#   local/data.sh [--data_root ${LIBRISPEECH} from db.sh] [--data_dir data] [--nj 2]
#                 [--parts "dev-clean dev-other test-clean test-other train-clean-100 train-clean-360 train-other-500"]
#                 [--train_set train_960] [--skip_download false] [--remove_archive false]
#                 [--url_base "https://www.openslr.org/resources/12 MIRROR ..."] [--speaker_unit reader]
#                 [--max_problem_fraction 0.01]
#
# 1. Download and unpack each part into <data_root>/LibriSpeech/<part>/ with
#    local/download_and_untar.sh (size and md5 checked; a part whose .complete flag exists is
#    skipped). --url_base may list several base URLs (openslr mirrors), tried in order.
#    --skip_download true only checks that the parts are already unpacked there.
# 2. One data dir per part, data/<part with _ for ->, e.g. data/dev_clean
#    (speechllm.bin.prepare_librispeech: wav.scp of FLAC paths, lowercased normalized text,
#    utt2spk, spk2utt, utt2dur, spk2gender). Skipped files and malformed lines are logged and
#    listed in data/<part>/.prepare/skipped.txt; more than --max_problem_fraction of a part is
#    an error. A part already made from the same folder is skipped.
# 3. The training parts in --parts combined into data/<train_set> (speechllm.bin.combine_data,
#    spk2gender merged), then validated. --train_set train_960 needs all three training parts;
#    --train_set "" makes no combined set. Skipped when already combined from the same parts.
set -euo pipefail

recipe_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
main_root=$(cd "${recipe_dir}/../../.." && pwd -P)
export MAIN_ROOT=${MAIN_ROOT:-${main_root}}   # db.sh refers to it
if [ -f "${recipe_dir}/db.sh" ]; then . "${recipe_dir}/db.sh"; else . "${main_root}/egs/TEMPLATE/asr1/db.sh"; fi

data_root=${LIBRISPEECH}
data_dir=data
nj=2
parts="dev-clean dev-other test-clean test-other train-clean-100 train-clean-360 train-other-500"
train_set=train_960
skip_download=false
remove_archive=false
# openslr.org, then its US and EU mirrors (the CN one: https://openslr.magicdatatech.com/resources/12)
url_base="https://www.openslr.org/resources/12 https://us.openslr.org/resources/12 https://openslr.elda.org/resources/12"
speaker_unit=reader
max_problem_fraction=0.01
help_message="Usage: $0 [--data_root DIR] [--data_dir data] [--nj 2] [--parts \"dev-clean ...\"]
  [--train_set train_960] [--skip_download false] [--remove_archive false] [--url_base URL ...]
  [--speaker_unit reader|chapter] [--max_problem_fraction 0.01]"
. "${main_root}/egs/TEMPLATE/asr1/utils/parse_options.sh"

log() { echo "$(date '+%Y-%m-%d %H:%M:%S') (data.sh) $*" >&2; }
die() { log "error: $*"; exit 1; }

# The package from this checkout, whether or not path.sh was sourced.
python=python3
[ -x "${main_root}/.venv/bin/python" ] && python="${main_root}/.venv/bin/python"
export PYTHONPATH="${main_root}${PYTHONPATH:+:${PYTHONPATH}}"

[ -n "${parts// /}" ] || die "--parts is empty"
case "${skip_download}" in true|false) ;; *) die "--skip_download takes true or false" ;; esac

train_parts=""
for part in ${parts}; do
    case "${part}" in train-*) train_parts+=" ${part}" ;; esac
done
if [ "${train_set}" = train_960 ] && [ -n "${train_parts}" ] && \
        [ "$(echo ${train_parts} | tr ' ' '\n' | sort | tr '\n' ' ')" != "train-clean-100 train-clean-360 train-other-500 " ]; then
    die "--train_set train_960 needs all three training parts, --parts has:${train_parts}." \
        "Name the set after what it holds, e.g. --train_set train_clean_100"
fi

log "step 1: LibriSpeech parts under ${data_root}/LibriSpeech: ${parts}"
for part in ${parts}; do
    if [ "${skip_download}" = true ]; then
        [ -d "${data_root}/LibriSpeech/${part}" ] || \
            die "${data_root}/LibriSpeech/${part} not found and --skip_download true;" \
                "run without it, or set --data_root (or LIBRISPEECH in db.sh) to the folder that holds LibriSpeech/"
        [ -f "${data_root}/LibriSpeech/${part}/.complete" ] || \
            log "note: ${data_root}/LibriSpeech/${part} has no .complete flag (not unpacked by download_and_untar.sh)"
    else
        "${recipe_dir}/local/download_and_untar.sh" --remove_archive "${remove_archive}" \
            "${data_root}" "${url_base}" "${part}"
    fi
done
[ "${skip_download}" = true ] && log "skip: downloads (--skip_download true); parts found"

log "step 2: data dirs under ${data_dir}/"
# shellcheck disable=SC2086
"${python}" -m speechllm.bin.prepare_librispeech --data_root "${data_root}" --data_dir "${data_dir}" \
    --parts ${parts} --nj "${nj}" --speaker_unit "${speaker_unit}" --max_problem_fraction "${max_problem_fraction}"

log "step 3: training set ${train_set:-(none)}"
train_dirs=""
for part in ${train_parts}; do train_dirs+=" ${data_dir}/${part//-/_}"; done
dst=${data_dir}/${train_set}
stamp=${dst}/.prepare/combined_from
combined_is_current() {  # the stamp names the same parts, none of them prepared again since
    [ -f "${stamp}" ] && [ "$(cat "${stamp}")" = "${train_dirs# }" ] || return 1
    for d in ${train_dirs}; do [ "${d}/.prepare/done" -nt "${stamp}" ] && return 1; done
    return 0
}
if [ -z "${train_set}" ]; then
    log "skip: no combined training set (--train_set \"\")"
elif [ -z "${train_parts}" ]; then
    log "skip: no training part in --parts, so no ${dst}"
elif [ "${train_dirs# }" = "${dst}" ]; then
    log "skip: ${dst} is the one training part itself"
elif combined_is_current; then
    log "skip: ${dst} already combined from${train_dirs}"
else
    rm -f "${stamp}"
    # shellcheck disable=SC2086
    "${python}" -m speechllm.bin.combine_data "${dst}" ${train_dirs}
    genders=()
    for d in ${train_dirs}; do [ -f "${d}/spk2gender" ] && genders+=("${d}/spk2gender"); done
    if [ "${#genders[@]}" -eq "$(echo ${train_dirs} | wc -w)" ]; then
        LC_ALL=C sort -u "${genders[@]}" > "${dst}/spk2gender"
        clash=$(cut -d' ' -f1 "${dst}/spk2gender" | uniq -d | head -3 | tr '\n' ' ')
        [ -z "${clash}" ] || die "speakers with two genders across${train_dirs}: ${clash}"
    else
        rm -f "${dst}/spk2gender"
        log "not every training part has spk2gender; ${dst} has none"
    fi
    "${python}" -m speechllm.bin.validate_data_dir "${dst}" --required wav.scp text utt2spk spk2utt utt2dur
    mkdir -p "${dst}/.prepare"
    echo "${train_dirs# }" > "${stamp}"
fi

made=""
for part in ${parts}; do made+=" ${data_dir}/${part//-/_}"; done
[ -f "${dst}/wav.scp" ] && [ -n "${train_set}" ] && made+=" ${dst}"
log "done:${made}"
