# Sourced by scripts/lock and .ci/run: the Pythons the project supports, and where they are.
# pyenv's newest patch release of each (`pyenv versions`), else python3.X on the PATH.

SUPPORTED_PYTHONS="3.10 3.11 3.12 3.13"
DEFAULT_PYTHON=3.11  # scripts/setup's .venv, the full suite, lint and types

python_for() {  # python_for 3.12 -> the path of a CPython 3.12 interpreter
    local minor=$1 version=""
    if command -v pyenv >/dev/null; then
        version=$(pyenv versions --bare 2>/dev/null | grep -E "^${minor//./\\.}\.[0-9]+$" \
            | sort -t. -k3,3n | tail -1 || true)
    fi
    if [ -n "$version" ]; then
        echo "$(pyenv root)/versions/$version/bin/python$minor"
    elif command -v "python$minor" >/dev/null; then
        command -v "python$minor"
    else
        echo "no CPython $minor here (pyenv install $minor, or python$minor on the PATH)" >&2
        return 1
    fi
}
