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
# jemalloc instead of glibc's malloc (docs/training.md): with batches of varying shapes glibc's
# heap keeps growing and CPU training slows down the longer a process runs (make bench measures
# both). SPEECHLLM_MALLOC=glibc keeps glibc's; SPEECHLLM_JEMALLOC names another library file.
if [ "${SPEECHLLM_MALLOC:-jemalloc}" = jemalloc ]; then
    jemalloc=${SPEECHLLM_JEMALLOC:-/usr/lib/$(uname -m)-linux-gnu/libjemalloc.so.2}
    if [ -f "${jemalloc}" ]; then
        case ":${LD_PRELOAD:-}:" in
            *":${jemalloc}:"*) ;;
            *) export LD_PRELOAD="${jemalloc}${LD_PRELOAD:+:${LD_PRELOAD}}" ;;
        esac
    fi
    unset jemalloc
elif [ "${SPEECHLLM_MALLOC}" != glibc ]; then
    echo "path.sh: SPEECHLLM_MALLOC must be jemalloc or glibc, got '${SPEECHLLM_MALLOC}'" >&2
    return 1 2>/dev/null || exit 1
fi
