#!/bin/sh
# The hub on ARM: builds (once, cached outside the clone) a Debian root filesystem for armhf (32-bit,
# the default) or arm64, installs the hub into it with Debian's python3 and Debian's packages, then runs
# the functional smoke (bench/arm32/smoke.py) and quick benchmark scenarios in it under
# qemu-user-static. The store: SQLite on armhf (no RocksDB wheel exists for it); on arm64 rocksdict's
# aarch64 wheel from PyPI is added, so the smoke, store, mqtt and memory scenarios run on both RocksDB
# and SQLite. On a Raspberry Pi (or any ARM Debian) it runs natively: no root filesystem, the same smoke
# and scenarios on the device's own python3 (see bench/README.md).
#
#   bench/arm32/run.sh [--arch armhf|arm64] [--release trixie] [--rootfs DIR] [--native|--emulated]
#                      [--smoke-only] [--build-only] [--scenarios "mqtt store ..."] [--dry-run]
#   (--arch defaults to the host's on an ARM Debian, else armhf; native there, emulated elsewhere)
set -eu

# The architecture: the host's own on an ARM Debian (a 64-bit kernel may run a 32-bit armhf userland, so
# dpkg's word counts, not uname's), else armhf.
HOST_ARCH=$(dpkg --print-architecture 2>/dev/null || true)
case "$HOST_ARCH" in
    armhf|arm64) ARCH=$HOST_ARCH ;;
    *) ARCH=$( [ "$(uname -m)" = aarch64 ] && echo arm64 || echo armhf ) ;;
esac
RELEASE=trixie
MIRROR=${EDGEHUB_DEBIAN_MIRROR:-http://deb.debian.org/debian}
CACHE=${EDGEHUB_ARM32_CACHE:-/var/cache/edgehub-arm32}
ROOTFS=""
MODE=auto
SMOKE_ONLY=0
BUILD_ONLY=0
DRY_RUN=0
SCENARIOS="router store mqtt memory"
# What Debian ships for the hub's dependencies (the hub itself needs only these; Debian trixie, whose
# Python 3.13 is the newest packaged). apt inside the root filesystem installs them (debootstrap's own
# resolver cannot satisfy virtual packages such as python3-cffi-backend-api-min, which
# python3-cryptography needs).
PACKAGES="python3 python3-venv python3-pip python3-mypy-extensions python3-uvloop python3-aiohttp python3-cryptography \
python3-qpid-proton mosquitto"

usage() {
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
    exit "${1:-0}"
}

while [ $# -gt 0 ]; do
    case "$1" in
        --arch) ARCH=${2:?--arch needs a value}; shift 2 ;;
        --release) RELEASE=${2:?--release needs a value}; shift 2 ;;
        --rootfs) ROOTFS=${2:?--rootfs needs a directory}; shift 2 ;;
        --scenarios) SCENARIOS=${2?--scenarios needs a list}; shift 2 ;;
        --native) MODE=native; shift ;;
        --emulated) MODE=emulated; shift ;;
        --smoke-only) SMOKE_ONLY=1; shift ;;
        --build-only) BUILD_ONLY=1; shift ;;
        --dry-run) DRY_RUN=1; shift ;;
        -h|--help) usage 0 ;;
        *) echo "run.sh: unknown argument: $1" >&2; usage 2 >&2 ;;
    esac
done

case "$ARCH" in
    armhf) QEMU=qemu-arm-static; MACHINES="armv7l armv6l armv8l" ;;
    arm64) QEMU=qemu-aarch64-static; MACHINES="aarch64" ;;
    *) echo "run.sh: --arch must be armhf or arm64, not $ARCH" >&2; exit 2 ;;
esac
[ -n "$ROOTFS" ] || ROOTFS="$CACHE/$RELEASE-$ARCH"
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
# The store: rocksdict has aarch64 wheels on PyPI (none for armhf), installed as pyproject.toml requires it.
ROCKSDICT=""
if [ "$ARCH" = arm64 ]; then
    ROCKSDICT=$(sed -n 's/^ *"\(rocksdict[^;"]*\).*/\1/p' "$REPO/pyproject.toml" | head -n 1)
    ROCKSDICT=${ROCKSDICT:-rocksdict}
fi

if [ "$MODE" = auto ]; then
    MODE=emulated
    [ "$HOST_ARCH" = "$ARCH" ] && MODE=native
    for machine in $MACHINES; do
        [ "$(uname -m)" = "$machine" ] && MODE=native
    done
fi

say() { echo "arm32: $*" >&2; }
run() {
    say "+ $*"
    [ "$DRY_RUN" = 1 ] || "$@"
}

if [ "$DRY_RUN" = 1 ]; then
    say "arch=$ARCH release=$RELEASE mode=$MODE rootfs=$ROOTFS scenarios=$SCENARIOS"
fi

# --- native: a Raspberry Pi or any ARM Debian -----------------------------------------------------------
if [ "$MODE" = native ]; then
    VENV=${EDGEHUB_ARM32_VENV:-$CACHE/venv-native}
    if [ "$DRY_RUN" = 0 ] && ! python3 -c 'import aiohttp, cryptography' 2>/dev/null; then
        say "install the Debian packages first: sudo apt-get install $PACKAGES"
        exit 1
    fi
    run python3 -m venv --system-site-packages "$VENV"
    run "$VENV/bin/pip" install -q --no-deps --no-build-isolation "$REPO"
    [ -z "$ROCKSDICT" ] || run "$VENV/bin/pip" install -q --only-binary=:all: "$ROCKSDICT"
    [ "$BUILD_ONLY" = 1 ] && exit 0
    cd "$REPO"
    if [ "$SMOKE_ONLY" = 1 ]; then
        run env EDGEHUB_BENCH_PLATFORM=native EDGEHUB_BENCH_START_SECS=120 "$VENV/bin/python" -m bench.arm32.smoke
        exit
    fi
    # The smoke is the suite's first scenario, so its table lands in the results file too.
    # shellcheck disable=SC2086  # the scenario list is words
    run env EDGEHUB_BENCH_PLATFORM=native EDGEHUB_BENCH_START_SECS=120 "$VENV/bin/python" -m bench --quick \
        --results "$REPO/bench/results" smoke $SCENARIOS
    exit
fi

# --- emulated: a cached Debian root filesystem under qemu-user-static ----------------------------------
if [ "$(id -u)" != 0 ] && [ "$DRY_RUN" = 0 ]; then
    say "building and entering the root filesystem needs root (debootstrap, chroot)"
    exit 1
fi
if [ "$DRY_RUN" = 0 ] && { ! command -v debootstrap >/dev/null || ! command -v "$QEMU" >/dev/null; }; then
    say "installing debootstrap and qemu-user-static"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        debootstrap qemu-user-static binfmt-support >/dev/null
fi

# binfmt_misc lets the kernel run ARM binaries through qemu (F flag: the interpreter is opened at
# registration, so it works inside the chroot). Where it cannot be registered, qemu is named explicitly.
BINFMT=0
if [ "$DRY_RUN" = 0 ]; then
    [ -e /proc/sys/fs/binfmt_misc/status ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null || true
    command -v update-binfmts >/dev/null && update-binfmts --enable "${QEMU%-static}" 2>/dev/null || true
    BINFMT_NAME=$( [ "$ARCH" = armhf ] && echo qemu-arm || echo qemu-aarch64 )
    grep -qx enabled "/proc/sys/fs/binfmt_misc/$BINFMT_NAME" 2>/dev/null && BINFMT=1
    say "binfmt_misc for $ARCH: $( [ "$BINFMT" = 1 ] && echo registered || echo 'not available: explicit qemu' )"
fi

# Two cached stages, each with its stamp: the Debian base system, then the hub's Debian packages.
BASE_STAMP="$ROOTFS/.edgehub-base-ready"
STAMP="$ROOTFS/.edgehub-rootfs-ready"
if [ ! -e "$STAMP" ] && [ "$DRY_RUN" = 0 ] && [ "$BINFMT" = 0 ]; then
    say "debootstrap's second stage and apt run ARM binaries: they need binfmt_misc (modprobe binfmt_misc)"
    exit 1
fi
if [ ! -e "$BASE_STAMP" ]; then
    run mkdir -p "$ROOTFS"
    run debootstrap --arch="$ARCH" --foreign --variant=minbase --include=ca-certificates "$RELEASE" "$ROOTFS" "$MIRROR"
    run cp "$(command -v "$QEMU" || echo /usr/bin/$QEMU)" "$ROOTFS/usr/bin/"
    run chroot "$ROOTFS" /debootstrap/debootstrap --second-stage
    run touch "$BASE_STAMP"
fi
if [ ! -e "$STAMP" ]; then
    run sh -c "echo 'deb $MIRROR $RELEASE main' > '$ROOTFS/etc/apt/sources.list'"
    # No service starts inside the chroot (Debian's mosquitto would otherwise try on install).
    run sh -c "printf '#!/bin/sh\nexit 101\n' > '$ROOTFS/usr/sbin/policy-rc.d' && chmod +x '$ROOTFS/usr/sbin/policy-rc.d'"
    run chroot "$ROOTFS" apt-get update -qq
    # A base system left half-configured by an interrupted run is repaired first.
    run chroot "$ROOTFS" env DEBIAN_FRONTEND=noninteractive apt-get -f install -y -qq
    # shellcheck disable=SC2086  # the package list is words
    run chroot "$ROOTFS" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $PACKAGES
    run chroot "$ROOTFS" apt-get clean
    run touch "$STAMP"
else
    say "reusing the root filesystem in $ROOTFS"
fi

# The hub: a pure-Python wheel built here (EDGEHUB_COMPILE=0: the host's compiler would build x86
# extensions), installed with --no-deps into a venv over Debian's packages, with the pure wheel of
# mypy-extensions (its one dependency Debian's list above lacks) and rocksdict's wheel on arm64.
# The venv stays between runs (creating one under emulation takes minutes); wheel and bench/ are fresh.
WHEELS="$ROOTFS/opt/edgehub/wheels"
run rm -rf "$WHEELS" "$ROOTFS/opt/edgehub/bench" "$ROOTFS/opt/edgehub/results"
run mkdir -p "$WHEELS"
HOST_PY=$( [ -x "$REPO/.venv/bin/python" ] && echo "$REPO/.venv/bin/python" || echo python3 )
run env EDGEHUB_COMPILE=0 "$HOST_PY" -m pip wheel -q --no-deps --no-build-isolation -w "$WHEELS" "$REPO"
run "$HOST_PY" -m pip download -q --no-deps --only-binary=:all: -d "$WHEELS" "mypy-extensions>=1.0"
if [ -n "$ROCKSDICT" ]; then
    # rocksdict's manylinux aarch64 wheel for the root filesystem's Python, fetched by the host's pip (pip
    # under emulation takes minutes), installed offline beside the hub's wheel. Before the root filesystem
    # exists (a dry run) its Python is taken to be trixie's.
    PYVER=$(readlink "$ROOTFS/usr/bin/python3" 2>/dev/null | sed -n 's/^python\([0-9.]*\)$/\1/p')
    run "$HOST_PY" -m pip download -q --no-deps --only-binary=:all: --implementation cp \
        --python-version "${PYVER:-3.13}" --platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64 \
        -d "$WHEELS" "$ROCKSDICT"
fi
run cp -r "$REPO/bench" "$ROOTFS/opt/edgehub/bench"
run rm -rf "$ROOTFS/opt/edgehub/bench/results" "$ROOTFS/opt/edgehub/bench/.peers"
IN_ROOT="chroot $ROOTFS"
[ "$BINFMT" = 1 ] || IN_ROOT="chroot $ROOTFS /usr/bin/$QEMU"
if [ ! -x "$ROOTFS/opt/edgehub/venv/bin/python" ]; then
    # shellcheck disable=SC2086  # IN_ROOT is a command prefix
    run $IN_ROOT /usr/bin/python3 -m venv --system-site-packages /opt/edgehub/venv
fi
# shellcheck disable=SC2086
run $IN_ROOT /bin/sh -c 'cd /opt/edgehub && venv/bin/pip install -q --no-deps --no-index --force-reinstall wheels/*.whl'
[ "$BUILD_ONLY" = 1 ] && exit 0

mounted=""
cleanup() {
    for m in $mounted; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM
for m in proc sys dev; do
    [ "$DRY_RUN" = 1 ] && continue
    mountpoint -q "$ROOTFS/$m" || { mount --bind "/$m" "$ROOTFS/$m" && mounted="$ROOTFS/$m $mounted"; }
done

# In the chroot the hub is started as `python -m edgehub`; without binfmt every ARM process it starts
# must go through qemu too, which EDGEHUB_BENCH_PYTHON tells the smoke and the scenarios.
PYTHON_PREFIX=/opt/edgehub/venv/bin/python
[ "$BINFMT" = 1 ] || PYTHON_PREFIX="/usr/bin/$QEMU /opt/edgehub/venv/bin/python"
COMMIT=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
ENVS="EDGEHUB_BENCH_COMMIT=$COMMIT EDGEHUB_BENCH_PLATFORM=emulated:$QEMU EDGEHUB_BENCH_PYTHON='$PYTHON_PREFIX' EDGEHUB_BENCH_START_SECS=300 \
HOME=/root PATH=/usr/sbin:/usr/bin:/sbin:/bin"
if [ "$SMOKE_ONLY" = 1 ]; then
    # shellcheck disable=SC2086
    run $IN_ROOT /bin/sh -c "cd /opt/edgehub && env $ENVS $PYTHON_PREFIX -m bench.arm32.smoke"
    exit
fi
RESULTS="$REPO/bench/results"
status=0
# shellcheck disable=SC2086
run $IN_ROOT /bin/sh -c "cd /opt/edgehub && env $ENVS $PYTHON_PREFIX -m bench --quick --no-plots \
--results /opt/edgehub/results smoke $SCENARIOS" || status=$?
if [ "$DRY_RUN" = 0 ]; then
    mkdir -p "$RESULTS"
    cp "$ROOTFS"/opt/edgehub/results/*.md "$RESULTS/" 2>/dev/null || true
    say "results copied to $RESULTS"
fi
exit "$status"
