#!/usr/bin/env bash
# QGIS 3.44 LTR (Debian trixie-backports: Python 3.13, numpy 2) in a chroot cached under ~/.cache/mtl-explain,
# and the plugin's QGIS-side tests run in it: the offscreen plugin tests, Processing through qgis_process and the
# real desktop under Xvfb. The worker side (training, export: PyTorch) stays on the host's suite; the tests that
# need it skip here, saying so. A tiny model is trained and exported to ONNX on the host for the fixtures.
#
#   tools/qgis344.sh build     build the chroot once (141-162 s on the development machine, 2.2 GB; root only)
#   tools/qgis344.sh test [PYTEST-ARGS]   build if needed, then run the tests in it (default: tests/plugin,
#                                         what `make test-qgis344` does)
#   tools/qgis344.sh shell     a shell in the chroot, with the repository at /mtl
#
# Nothing outside the cache folder changes: every mount is undone on exit, on failure too.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${MTL_EXPLAIN_CACHE:-$HOME/.cache/mtl-explain}
BASE=$CACHE/qgis-3.44
ROOTFS=$BASE/rootfs
READY=$ROOTFS/.mtl-ready    # holds the recipe it was built from: a changed recipe rebuilds what changed
FIXTURES=$BASE/fixtures
PY=${PY:-$ROOT/.venv/bin/python}
# The machine's own Debian mirror (first URIs line of its sources), else Debian's.
MIRROR=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
MIRROR=${MIRROR:-http://deb.debian.org/debian}
APT_OPTS=(-o Acquire::Check-Valid-Until=false -o Acquire::Retries=3)  # a dated mirror snapshot: expired Release
PACKAGES=(qgis python3-qgis qgis-providers xvfb xauth python3-pip python3-venv python3-yaml make)
# what QGIS's Python needs for the plugin (ONNX Runtime; Dask for sharded runs) and the tests (package scan too)
PIP_PACKAGES=(onnxruntime==1.32.0 "dask[distributed]==2026.8.0" "tqdm>=4.60" "pytest>=8,<9" pytest-qgis==5.0.2
              "bandit>=1.7,<2" "detect-secrets>=1.4,<2" "flake8>=7,<8")
MOUNTED=()

say() { echo "qgis344: $*" >&2; }

mount_in() {  # mount_in TARGET MOUNT-ARGS...: mount unless already mounted, remember it for cleanup
    local target=$1; shift
    mkdir -p "$target"
    if ! mountpoint -q "$target"; then
        mount "$@" "$target" || return 1
        MOUNTED=("$target" "${MOUNTED[@]}")
    fi
}

unmount_under() {  # every mount at or below DIR (one a killed run left too), deepest first; fails if one stays.
    # A folder is only ever removed after this: rm -rf through a bind mount would delete the repository.
    local dir=$1 target
    for target in $(awk -v d="$dir" '$2 == d || index($2, d "/") == 1 {print $2}' /proc/self/mounts | sort -r); do
        umount "$target" 2>/dev/null || umount -l "$target"
    done
    if awk -v d="$dir" '$2 == d || index($2, d "/") == 1 {found = 1} END {exit !found}' /proc/self/mounts; then
        say "something is still mounted under $dir: unmount it by hand"; return 1
    fi
}

unmount_all() {
    local target
    for target in "${MOUNTED[@]}"; do
        mountpoint -q "$target" && { umount "$target" || umount -l "$target"; }
    done
    MOUNTED=()
}
trap unmount_all EXIT
trap 'exit 130' INT  # so that the EXIT trap runs when interrupted too
trap 'exit 143' TERM

in_chroot() {  # in_chroot DIR COMMAND...: run in the chroot with a clean environment
    local dir=$1; shift
    chroot "$dir" /usr/bin/env -i HOME=/root PATH=/opt/mtl-venv/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
        DEBIAN_FRONTEND=noninteractive PIP_CERT=/etc/ssl/certs/mtl-host-ca.crt PIP_DEFAULT_TIMEOUT=180 \
        PIP_DISABLE_PIP_VERSION_CHECK=1 "$@"
}

need_root() {
    if [ "$(id -u)" != 0 ]; then
        say "building and entering the QGIS 3.44 chroot needs root (debootstrap, chroot, mount): skipped."
        say "run it as root: sudo make test-qgis344   (or sudo tools/qgis344.sh test)"
        exit 0
    fi
}

step() {  # step WHAT COMMAND...: run, its output into the build log; on failure say so with the log's last lines
    local what=$1; shift
    "$@" >>"$BASE/build.log" 2>&1 && return 0
    say "$what failed; the last lines of $BASE/build.log:"; tail -5 "$BASE/build.log" >&2
    return 1
}

build() {  # every step ends the build when it fails (set -e does not hold where the caller tests the result)
    local new=$ROOTFS.partial started=$SECONDS apt_recipe="$MIRROR ${PACKAGES[*]}" pip_recipe="${PIP_PACKAGES[*]}"
    [ "$(cat "$READY" 2>/dev/null)" = "$pip_recipe" ] && [ "$(cat "$ROOTFS/.mtl-apt" 2>/dev/null)" = "$apt_recipe" ] &&
        return 0
    unmount_under "$ROOTFS" && unmount_under "$new" || return 1
    mkdir -p "$BASE" && : >"$BASE/build.log" || return 1
    if [ -d "$ROOTFS" ]; then rm -f "$READY" && mv "$ROOTFS" "$new" || return 1; fi  # what is still right is kept
    if [ "$(cat "$new/.mtl-apt" 2>/dev/null)" != "$apt_recipe" ]; then  # else a build stopped after this step
        rm -rf "$new" || return 1
        command -v debootstrap >/dev/null || step "apt-get install debootstrap" \
            apt-get install -y --no-install-recommends debootstrap || return 1
        say "debootstrap trixie from $MIRROR into $new"
        step debootstrap debootstrap --variant=minbase trixie "$new" "$MIRROR" || return 1
        echo "deb $MIRROR trixie-backports main" >"$new/etc/apt/sources.list.d/backports.list" || return 1
        cp /etc/resolv.conf "$new/etc/resolv.conf" || return 1
        mount_in "$new/proc" -t proc proc || return 1
        say "installing QGIS 3.44 from trixie-backports (about 400 packages)"
        step "apt-get update" in_chroot "$new" apt-get "${APT_OPTS[@]}" update || return 1
        step "apt-get install" in_chroot "$new" apt-get "${APT_OPTS[@]}" install -y --no-install-recommends \
            -t trixie-backports "${PACKAGES[@]}" || return 1
        step "apt-get clean" in_chroot "$new" apt-get clean || return 1
        echo "$apt_recipe" >"$new/.mtl-apt" || return 1
    fi
    # The machine's certificate authorities, which its registry's proxy may need; a file of its own, as the
    # chroot's ca-certificates package rewrites its bundle.
    cp /etc/ssl/certs/ca-certificates.crt "$new/etc/ssl/certs/mtl-host-ca.crt" || return 1
    rm -rf "$new/opt/mtl-venv" || return 1
    step venv in_chroot "$new" python3 -m venv --system-site-packages /opt/mtl-venv || return 1
    step "pip install" in_chroot "$new" /opt/mtl-venv/bin/pip install "${PIP_PACKAGES[@]}" || return 1
    unmount_all
    mv "$new" "$ROOTFS" && echo "$pip_recipe" >"$READY" || return 1
    say "chroot ready in $((SECONDS - started)) s: $(du -sh "$ROOTFS" | cut -f1), $(versions)"
}

versions() {
    in_chroot "$ROOTFS" python3 -c 'import sys, numpy, qgis.core as q; print(f"QGIS {q.Qgis.version()}, Python \
{sys.version.split()[0]}, numpy {numpy.__version__}")' 2>/dev/null
}

fixtures() {  # the crop and a tiny model trained on it on the host (PyTorch), exported to ONNX, for the chroot
    if [ ! -f "$FIXTURES/tiny.mtl.onnx" ] || [ -n "$(find "$ROOT/mtl_core" "$ROOT/tests/fixtures.py" -name '*.py' \
            -newer "$FIXTURES/tiny.mtl.onnx" | head -1)" ]; then
        rm -rf "$FIXTURES"
        mkdir -p "$FIXTURES"
        (cd "$ROOT" && "$PY" -m tests.fixtures "$FIXTURES") >"$BASE/fixtures.log" 2>&1 || {
            say "preparing the test model on the host failed; the last lines of $BASE/fixtures.log:"
            tail -5 "$BASE/fixtures.log" >&2; return 1; }
    fi
}

mount_work() {  # the repository at /mtl, the prepared sample, the fixtures at the path the host wrote them at
    local sample
    sample=$(cd "$ROOT" && "$PY" -c 'from mtl_core.sample_data import prepare_sample; print(prepare_sample().parent)')
    mount_in "$ROOTFS/proc" -t proc proc || return 1  # the first mount: where mounting is not allowed, stop here
    mount_in "$ROOTFS/dev" --bind /dev || return 1
    mount_in "$ROOTFS/dev/shm" -t tmpfs tmpfs || return 1
    mount_in "$ROOTFS/mtl" --bind "$ROOT" || return 1
    mount_in "$ROOTFS/root/.cache/mtl-explain/raleigh" --bind "$sample" || return 1
    mount_in "$ROOTFS$FIXTURES" --bind "$FIXTURES" || return 1
    mount -o remount,ro,bind "$ROOTFS$FIXTURES"  # a test that writes into the shared crop fails here too
}

run_tests() {  # run_tests [PYTEST-ARGS]: default tests/plugin
    local started=$SECONDS args="${*:-tests/plugin}" rc=0
    unmount_under "$ROOTFS" || return 1  # what a killed run left mounted would hide new fixtures
    fixtures || return 1
    if ! mount_work; then
        say "mounting into the chroot is not allowed here: the QGIS 3.44 tests did not run."
        unmount_all
        [ "${MTL_REQUIRE_QGIS344:-0}" = 1 ] && return 1
        return 0
    fi
    say "$(versions): $args (the tests of the worker's side run on the host only)"
    in_chroot "$ROOTFS" sh -c "cd /mtl && exec env MTL_QGIS_SIDE_ONLY=1 MTL_TEST_CROP=$FIXTURES/crop \
        MTL_TEST_ONNX_MODEL=$FIXTURES/tiny.mtl.onnx MTL_TEST_REFERENCE=$FIXTURES/reference \
        QT_QPA_PLATFORM=offscreen PYTHONDONTWRITEBYTECODE=1 python -m pytest -p no:cacheprovider -ra $args" || rc=$?
    say "QGIS 3.44 part: $((SECONDS - started)) s, pytest exit $rc"
    return $rc
}

case "${1:-test}" in
    build) need_root; build ;;
    test)
        need_root
        if ! build; then
            say "the QGIS 3.44 chroot could not be built (see above): its tests did not run."
            [ "${MTL_REQUIRE_QGIS344:-0}" = 1 ] && exit 1
            exit 0
        fi
        shift || true
        run_tests "$@" ;;
    shell) need_root; build; unmount_under "$ROOTFS"; fixtures; mount_work; in_chroot "$ROOTFS" sh -c 'cd /mtl && exec bash' ;;
    *) echo "usage: $0 build|test|shell" >&2; exit 2 ;;
esac
