# Sourced by recipes: puts the toolkit's virtualenv and tools on PATH.
MAIN_ROOT=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../../.." && pwd -P)
export MAIN_ROOT
if [ -f "${MAIN_ROOT}/.venv/bin/activate" ]; then
    # shellcheck disable=SC1091
    . "${MAIN_ROOT}/.venv/bin/activate"
fi
export PATH="${MAIN_ROOT}/tools/launch:${PATH}"
export PYTHONUNBUFFERED=1
# Keep math libraries from oversubscribing the cores when several jobs run at once.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
