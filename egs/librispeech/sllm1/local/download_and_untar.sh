#!/usr/bin/env bash
# Download one LibriSpeech part, check it, unpack it.
#
#   local/download_and_untar.sh [--remove_archive false] [--verify true] <data_root> <url_base> <part>
#   e.g. local/download_and_untar.sh downloads https://www.openslr.org/resources/12 dev-clean
#
# <part>: dev-clean dev-other test-clean test-other train-clean-100 train-clean-360 train-other-500.
# <url_base>: one or more base URLs separated by spaces, tried in order (openslr's mirrors,
#   a local copy, file:///...); <url_base>/<part>.tar.gz is fetched with curl (or wget),
#   resuming an interrupted download from <data_root>/<part>.tar.gz.part.
# Checks (--verify true, the default): free disk space, the archive's byte size and its md5
#   sum against the values of the final release below. --verify false is for archives that
#   are not the official ones (a local subset, tests).
# Unpacks into <data_root>/LibriSpeech/<part>/ and then writes the flag file
#   <data_root>/LibriSpeech/<part>/.complete; a rerun with the flag present does nothing.
#   --remove_archive true deletes the archive after a successful untar.
set -euo pipefail

remove_archive=false
verify=true
help_message="Usage: $0 [--remove_archive false] [--verify true] <data_root> <url_base> <part>
  e.g. $0 downloads https://www.openslr.org/resources/12 dev-clean"

main_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd -P)
. "${main_root}/egs/TEMPLATE/asr1/utils/parse_options.sh"

log() { echo "$(date '+%Y-%m-%d %H:%M:%S') (download_and_untar.sh) $*" >&2; }
die() { log "error: $*"; exit 1; }

if [ $# -ne 3 ]; then
    echo "${help_message}" >&2
    exit 1
fi
data_root=$1
url_base=$2
part=$3

# Byte sizes: the "sizes_new" list of Kaldi's egs/librispeech/s5/local/download_and_untar.sh.
# md5 sums: https://www.openslr.org/resources/12/md5sum.txt as copied into PaddleSpeech
# (examples/librispeech, MD5_*) and lhotse; several independent copies agree on all seven.
declare -A sizes=(
    [dev-clean]=337926286 [dev-other]=314305928 [test-clean]=346663984 [test-other]=328757843
    [train-clean-100]=6387309499 [train-clean-360]=23049477885 [train-other-500]=30593501606
)
declare -A md5s=(
    [dev-clean]=42e2234ba48799c1f50f24a7926300a1 [dev-other]=c8d0bcc9cca99d4f8b62fcc847357931
    [test-clean]=32fa31d27d2e1cad72775fee3f4849a9 [test-other]=fb5a50374b501bb3bac4815ee91d3135
    [train-clean-100]=2a93770f6d5c6c964bc36631d331a522 [train-clean-360]=c0e676e450a7ff2f54aeade5171606fa
    [train-other-500]=d1a0fd59409feb2c614ce4d30c387708
)

known_parts="dev-clean dev-other test-clean test-other train-clean-100 train-clean-360 train-other-500"
case " ${known_parts} " in
    *" ${part} "*) ;;
    *) die "unknown part '${part}'; expected one of: ${known_parts}" ;;
esac
[ -n "${url_base// /}" ] || die "empty <url_base>"
case "${remove_archive}:${verify}" in
    true:true|true:false|false:true|false:false) ;;
    *) die "--remove_archive and --verify take true or false" ;;
esac

part_dir=${data_root}/LibriSpeech/${part}
if [ -f "${part_dir}/.complete" ]; then
    log "skip: ${part} is already unpacked (${part_dir}/.complete exists); nothing to do"
    exit 0
fi
mkdir -p "${data_root}"
archive=${data_root}/${part}.tar.gz
size=${sizes[${part}]}

file_size() { stat -c %s "$1"; }
gb() { awk -v b="$1" 'BEGIN { printf "%.1f GB", b / 1e9 }'; }

check_space() {  # check_space BYTES: enough free space under data_root?
    local need=$1 avail
    avail=$(( $(df -Pk "${data_root}" | awk 'NR == 2 { print $4 }') * 1024 ))
    if [ "${avail}" -lt "${need}" ]; then
        die "${data_root} has $(gb "${avail}") free; ${part} needs about $(gb "${need}") more" \
            "(archive and unpacked audio). Free some space, or set LIBRISPEECH in db.sh to a larger disk"
    fi
}

reject() {  # reject WHY: move a bad archive aside and stop
    mv -f "${archive}" "${archive}.bad"
    die "${archive}: $1; moved to ${archive}.bad (delete it and rerun to download again)"
}

# 1. the archive: already here, or a finished .part from an interrupted run, or download it
if [ -f "${archive}" ]; then
    log "found ${archive}"
elif [ -f "${archive}.part" ] && [ "${verify}" = true ] && [ "$(file_size "${archive}.part")" -eq "${size}" ]; then
    log "found a complete ${archive}.part"
    mv "${archive}.part" "${archive}"
else
    if [ "${verify}" = true ]; then
        have=0
        [ -f "${archive}.part" ] && have=$(file_size "${archive}.part")
        check_space $(( size - have + size + size / 20 ))
    fi
    if command -v curl >/dev/null; then
        fetch() { curl -fL --retry 3 --retry-delay 5 -C - -o "${archive}.part" "$1"; }
    elif command -v wget >/dev/null; then
        fetch() { wget -c -O "${archive}.part" "$1"; }
    else
        die "neither curl nor wget is installed"
    fi
    ok=false
    for base in ${url_base}; do
        url=${base%/}/${part}.tar.gz
        log "downloading ${url} ($(gb "${size}") for the official archive); an interrupted download resumes"
        if fetch "${url}"; then ok=true; break; fi
        log "download from ${url} failed; trying the next URL base, if any"
    done
    ${ok} || die "could not download ${part}.tar.gz from any of: ${url_base} (partial data kept in ${archive}.part)"
    mv "${archive}.part" "${archive}"
fi

# 2. checks
if [ "${verify}" = true ]; then
    actual=$(file_size "${archive}")
    [ "${actual}" -eq "${size}" ] || reject "size ${actual} bytes, the release's is ${size}"
    log "checking the md5 sum of ${archive} ($(gb "${size}"))"
    md5=$(md5sum "${archive}" | awk '{ print $1 }')
    [ "${md5}" = "${md5s[${part}]}" ] || reject "md5 ${md5}, the release's is ${md5s[${part}]}"
    log "size and md5 match the release"
    check_space $(( size + size / 20 ))
else
    log "--verify false: size and md5 not checked"
fi

# 3. unpack (a rerun after an interrupted untar simply unpacks again over the partial files)
log "unpacking ${archive} into ${data_root}/LibriSpeech/"
tar -xzf "${archive}" -C "${data_root}" --no-same-owner || die "untar of ${archive} failed"
[ -d "${part_dir}" ] || die "${archive} did not contain LibriSpeech/${part}/"
touch "${part_dir}/.complete"
log "${part} unpacked into ${part_dir}"

if [ "${remove_archive}" = true ]; then
    rm -f "${archive}"
    log "removed ${archive} (--remove_archive true)"
fi
