# shellcheck shell=bash
# Installs what the tests and CI need when it is missing; sourced by scripts/test and .ci/run.
# Debian packages through apt-get (as root, or through sudo when there is one), cargo tools with
# `cargo install --locked`. Each function returns non-zero, after saying what to install by hand,
# when it cannot install.

# Runs "$@" as root: directly when we are root, through sudo when it exists.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        return 1
    fi
}

# apt_install WHY PACKAGE... — installs Debian packages, or explains what to install.
apt_install() {
    local why="$1"; shift
    echo "== installing $* (Debian) for $why"
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "error: $why needs $*, and this machine has no apt-get: install $* by hand" >&2
        return 1
    fi
    if ! as_root apt-get update -qq ||
        ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"; then
        echo "error: $why needs $*, which could not be installed (root or sudo is needed):" >&2
        echo "       apt-get install -y $*" >&2
        return 1
    fi
}

# node and npm, for the PouchDB interop suite.
ensure_node() {
    if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
        return 0
    fi
    apt_install "the PouchDB interop tests" nodejs npm || return 1
    hash -r
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        echo "error: node and npm are still missing after installing nodejs and npm" >&2
        return 1
    fi
}

# The Chromium the status-page test drives: $CHROMIUM when set, else Debian's /usr/bin/chromium.
ensure_chromium() {
    if [ -n "${CHROMIUM:-}" ]; then
        [ -x "$CHROMIUM" ] && return 0
        echo "error: CHROMIUM=$CHROMIUM is not an executable (unset it to use Debian's chromium)" >&2
        return 1
    fi
    [ -x /usr/bin/chromium ] && return 0
    apt_install "the status-page test" chromium || return 1
    if [ ! -x /usr/bin/chromium ]; then
        echo "error: /usr/bin/chromium is still missing after installing chromium" >&2
        return 1
    fi
}

# iproute2's `ip`, for the LAN plugin's tests in network namespaces (adhoc-wireless).
ensure_iproute2() {
    command -v ip >/dev/null 2>&1 && return 0
    apt_install "the network-namespace tests" iproute2 || return 1
    hash -r
    if ! command -v ip >/dev/null 2>&1; then
        echo "error: ip is still missing after installing iproute2" >&2
        return 1
    fi
}

# C tor's `tor` and `tor-gencert`, for the private Tor network on loopback (scripts/tor-testnet)
# that the tor-transport tests run on. Debian's package may try to start its own system tor
# service; scripts/tor-testnet neither uses nor disturbs it.
ensure_tor() {
    # Debian installs tor in /usr/sbin, which an ordinary user's PATH lacks.
    case ":$PATH:" in
        *:/usr/sbin:*) ;;
        *) PATH="$PATH:/usr/sbin" ;;
    esac
    command -v tor >/dev/null 2>&1 && command -v tor-gencert >/dev/null 2>&1 && return 0
    apt_install "the Tor test network" tor || return 1
    hash -r
    if ! command -v tor >/dev/null 2>&1 || ! command -v tor-gencert >/dev/null 2>&1; then
        echo "error: tor or tor-gencert is still missing after installing tor" >&2
        return 1
    fi
}

# libdbus's headers and pkg-config: adhoc-wireless's `ble` feature (bluer and btleplug talk to
# BlueZ over D-Bus) links libdbus, and `--all-features` builds it.
ensure_dbus_dev() {
    command -v pkg-config >/dev/null 2>&1 && pkg-config --exists dbus-1 && return 0
    apt_install "the ble feature (BlueZ over D-Bus)" libdbus-1-dev pkg-config || return 1
    hash -r
    if ! pkg-config --exists dbus-1; then
        echo "error: pkg-config still finds no dbus-1 after installing libdbus-1-dev" >&2
        return 1
    fi
}

# ensure_cargo_tool TOOL... — cargo subcommands, from crates.io.
ensure_cargo_tool() {
    local tool
    for tool in "$@"; do
        if ! command -v "$tool" >/dev/null 2>&1; then
            echo "== installing $tool"
            cargo install --locked "$tool" || return 1
        fi
    done
}
