#!/usr/bin/env bash
# Installs the Debian packages the recipes need, only when something is missing.
#   espeak-ng, festival + English voices, flite : speech synthesis for egs/mini_synth
#   bible-kjv                            : public-domain English text for egs/mini_synth
#   sox                                  : speed perturbation and audio pipes in wav.scp
#   libjemalloc2                         : the allocator recipes preload (egs/TEMPLATE/asr1/path.sh)
set -euo pipefail

packages=(espeak-ng festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts flite bible-kjv sox libjemalloc2)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "install_debian_deps: all ${#packages[@]} Debian packages present"
    exit 0
fi
echo "install_debian_deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "install_debian_deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
    SUDO=sudo
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
