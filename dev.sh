#!/usr/bin/env bash
# Developer entry point (see README.md):
#   ./dev.sh demo   netsock's stack on a TUN device, talking to the Linux kernel
#   ./dev.sh test   unit tests on Python 3.11, 3.12 and 3.13, then the integration tests
# Both need root (network namespaces, TUN/TAP) and re-run themselves with sudo if needed.
# They install what they need: Debian packages (apt) and a virtualenv in .venv.
set -euo pipefail
cd "$(dirname "$0")"

TEST_APT_PACKAGES=(tshark iperf3 hping3 socat iptables iputils-ping iproute2 curl openssl)
DEMO_APT_PACKAGES=(curl iproute2)

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'dev.sh: %s\n' "$*" >&2; exit 1; }

become_root() {
    [ "$(id -u)" -eq 0 ] && return
    command -v sudo >/dev/null || die "needs root (network namespaces, TUN/TAP): run it as root"
    exec sudo env "PATH=$PATH" "$0" "$@"
}

install_apt_packages() {
    local missing=() pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return
    say "Installing Debian packages: ${missing[*]}"
    # tshark's package otherwise stops to ask whether non-root users may capture.
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# The real path of pythonX.Y: from PATH, else the newest pyenv-installed X.Y (pyenv's shims only
# run the versions pyenv has selected, so a shim on PATH is no proof the version runs).
find_python() {
    local version=$1 candidate=""
    if command -v pyenv >/dev/null; then
        candidate=$(ls -d "$(pyenv root)/versions/$version".*/bin/"python$version" 2>/dev/null | sort -V | tail -n 1 || true)
    fi
    for candidate in "python$version" $candidate; do
        "$candidate" -c "import sys; print(sys.executable)" 2>/dev/null && return
    done
    return 1
}

# Puts Python 3.11-3.13 first on PATH (tox looks for them there); the venv is made with 3.11.
setup_pythons() {
    local version python
    for version in 3.13 3.12 3.11; do
        python=$(find_python "$version") || die "Python $version not found (install it, e.g. with pyenv)"
        PATH="$(dirname "$python"):$PATH"
    done
    export PATH
}

setup_venv() {
    if [ ! -x .venv/bin/python ]; then
        say "Creating .venv (Python 3.11)"
        python3.11 -m venv .venv
    fi
    say "Installing netsock into .venv: $*"
    .venv/bin/python -m pip install -q --disable-pip-version-check "$@"
}

run_tests() {
    install_apt_packages "${TEST_APT_PACKAGES[@]}"
    setup_pythons
    setup_venv tox -e ".[test]"
    local status=0
    say "Unit tests on Python 3.11, 3.12, 3.13"
    .venv/bin/tox -p -e py311,py312,py313 || status=1
    say "Integration tests (network namespaces, real kernel peer)"
    .venv/bin/tox -e integration || status=1
    if [ $status -ne 0 ]; then
        say "FAILED (see above)"
    else
        say "All tests passed"
    fi
    return $status
}

run_demo() {
    local python
    install_apt_packages "${DEMO_APT_PACKAGES[@]}"
    python=$(find_python 3.11) || die "Python 3.11 not found (install it, e.g. with pyenv)"
    PATH="$(dirname "$python"):$PATH"
    setup_venv -e ".[demo]"
    .venv/bin/python -m netsock.demo
}

case "${1:-}" in
    test) become_root "$@"; run_tests ;;
    demo) become_root "$@"; run_demo ;;
    *) echo "usage: $0 test|demo" >&2; exit 2 ;;
esac
