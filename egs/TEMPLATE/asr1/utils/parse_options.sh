#!/usr/bin/env bash
# Sourced after a script declares its defaults: turns "--name value" (or --name=value)
# into name=value for every variable the script already defines, so a typo is an error,
# not a silently ignored option. Leaves positional arguments in "$@".
# "--help" prints the variables the script declared in $help_message (if set).

_positional=()
while [ $# -gt 0 ]; do
    case "$1" in
        --help|-h)
            echo "${help_message:-no help}"; exit 0 ;;
        --*=*)
            _name="${1%%=*}"; _name="${_name#--}"; _value="${1#*=}"; shift ;;
        --*)
            _name="${1#--}"
            [ $# -ge 2 ] || { echo "$0: option --${_name} needs a value" >&2; exit 1; }
            _value="$2"; shift 2 ;;
        *)
            _positional+=("$1"); shift; continue ;;
    esac
    _name="${_name//-/_}"
    if ! declare -p "${_name}" >/dev/null 2>&1; then
        echo "$0: unknown option --${_name}" >&2
        exit 1
    fi
    printf -v "${_name}" '%s' "${_value}"
done
set -- "${_positional[@]+"${_positional[@]}"}"
unset _name _value _positional
