#!/bin/bash
# fresh-check.sh - the README's quick start on a freshly installed Debian 12
#
#   make fresh-check                 (or tests/fresh/fresh-check.sh, as root)
#
# CI runs `make check` on machines that already have packages left over from
# earlier work, so a package that install-deps.sh forgets goes unnoticed
# there. This script catches it: it unpacks a minimal Debian 12 (bookworm,
# debootstrap --variant=minbase) into a throw-away folder, copies the
# committed tree into it (git archive HEAD: not the built tree, nothing
# uncommitted), and inside that chroot, as root, does what README.md says:
#
#   1. ./install-deps.sh --build, then `make run` in the background (it is
#      interactive in the README: foreground, Ctrl-C), one message over SMTP
#      (smtplib, from outside the chroot: only loopback) and one with
#      bin/sendmail, both seen in run/mail/user/new/, then `sluice stop`;
#      the test-only packages must not be installed by then;
#   2. make check (installs the rest of the packages itself); a test that
#      pytest skips fails the check too (-rs shows why): a test skipped
#      because a tool is missing is an install-deps.sh bug.
#
# It needs root, debootstrap (installed when missing), network access to a
# Debian mirror (the one apt uses here: /etc/apt/sources.list*), and about
# 3 GB under the work folder. It runs in a mount namespace of its own, so the
# chroot's mounts (/proc, a minimal /dev with /dev/pts and /dev/shm) never
# show outside and disappear with it; a trap also unmounts them and ends
# whatever still runs inside the chroot on every exit. Two runs at once work.
#
# Environment:
#   SLUICE_FRESH_CACHE=DIR   cache (default /var/cache/sluice-fresh): the
#                            finished minbase chroot as a tarball (remade
#                            after 30 days) and apt's downloaded .debs
#   SLUICE_FRESH_REFRESH=1   remake the cached minbase tarball now
#   SLUICE_FRESH_MIRROR=URL  Debian mirror (default: the one apt uses here)
#   SLUICE_FRESH_WORK=DIR    where the chroot is unpacked (default /var/tmp)
#   SLUICE_FRESH_KEEP=1      keep the chroot and logs afterwards
#   SLUICE_FRESH_REV=REV     what to copy in (default HEAD)
#   SLUICE_FRESH_MAKEFLAGS   extra make arguments for `make check`
#                            (e.g. SANITIZE=1)
#   SLUICE_FRESH_ALLOW_SKIPS=1   accept tests that pytest skipped
# Logs go to $WORK/logs and the last lines of a failed step to stderr.
set -euo pipefail

# All of it in one block: bash reads the block whole before running it, so
# editing this file while a run goes on cannot change what that run does.
{
SUITE=bookworm
TOP=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${SLUICE_FRESH_CACHE:-/var/cache/sluice-fresh}
WORKBASE=${SLUICE_FRESH_WORK:-/var/tmp}
REV=${SLUICE_FRESH_REV:-HEAD}
BASE_MAX_AGE_DAYS=30
HOST_PYTHON=/usr/bin/python3
CHROOT_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# Only test-only packages: none of them may come with ./install-deps.sh --build.
TEST_ONLY_PROBES="python3-pytest python3-aiosmtpd swaks valgrind clang strace"

die() { echo "fresh-check: $*" >&2; exit 1; }
say() { printf 'fresh-check: [%s] %s\n' "$(elapsed)" "$*"; }
START=$(date +%s)
elapsed() { local s=$(( $(date +%s) - START )); printf '%dm%02ds' $((s / 60)) $((s % 60)); }

[ "$(id -u)" -eq 0 ] || die "run as root (debootstrap, chroot and mount need it)"

# A mount namespace of our own: the mounts below are private to this run and
# vanish with it even if it is killed with SIGKILL.
if [ -z "${SLUICE_FRESH_NS:-}" ]; then
    export SLUICE_FRESH_NS=1
    exec unshare --mount --propagation private -- "$0" "$@"
fi

# --- the Debian mirror apt uses on this machine ---------------------------
# deb822 stanzas (*.sources) and one-line entries (*.list): the first deb
# source for the plain suite (not -security / -updates).
apt_mirror() {
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [ -r "$f" ] || continue
        case $f in
        *.sources)
            awk -v suite="$SUITE" '
                function flush() {
                    if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " suite " ") && uris != "") {
                        split(uris, u, " "); print u[1]; found = 1; exit
                    }
                    types = suites = uris = ""
                }
                /^[ \t]*#/ { next }
                /^[ \t]*$/ { flush(); next }
                tolower($1) == "types:"  { $1 = ""; types = $0 }
                tolower($1) == "suites:" { $1 = ""; suites = $0 }
                tolower($1) == "uris:"   { $1 = ""; uris = $0; sub(/^ +/, "", uris) }
                END { if (!found) flush() }' "$f"
            ;;
        *)
            awk -v suite="$SUITE" '
                $1 == "deb" {
                    i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                    if ($(i + 1) == suite) { print $i; exit }
                }' "$f"
            ;;
        esac
    done | head -n 1
}
MIRROR=${SLUICE_FRESH_MIRROR:-$(apt_mirror)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}

# --- mounts and cleanup ---------------------------------------------------
WORK=
ROOT=
RUN_PID=
CHILD=
BUILD_TMP=

# Run "$@" in the background and wait for it. bash runs a trap only between
# foreground commands, but at once during `wait`: so a SIGTERM or SIGINT to
# this script stops a long step (debootstrap, make check) right away.
fg_wait() {
    local rc=0
    "$@" &
    CHILD=$!
    wait "$CHILD" || rc=$?
    CHILD=
    return "$rc"
}

# Mount points at or below $1, deepest first.
mounts_under() {
    awk -v top="$1" '$5 == top || index($5, top "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r
}

umount_under() {
    local m
    for m in $(mounts_under "$1"); do
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || echo "fresh-check: cannot unmount $m" >&2
    done
}

# Processes whose root is the chroot (what make run / make check left).
kill_chroot_procs() {
    local root=$1 p r pids=
    for p in /proc/[0-9]*; do
        r=$(readlink "$p/root" 2>/dev/null) || continue
        [ "$r" = "$root" ] && pids="$pids ${p#/proc/}"
    done
    [ -n "$pids" ] || return 0
    echo "fresh-check: ending what still runs in the chroot:$pids" >&2
    kill -9 $pids 2>/dev/null || true
    sleep 1
}

# Remove a folder only when nothing is mounted under it any more.
safe_rm() {
    umount_under "$1"
    if [ -n "$(mounts_under "$1")" ]; then
        echo "fresh-check: still mounted under $1; left in place" >&2
        return 0
    fi
    rm -rf --one-file-system "$1"
}

# The .debs this run downloaded go to the cache for the next run.
save_debs() {
    local d
    for d in "$ROOT"/var/cache/apt/archives/*.deb; do
        [ -f "$d" ] && [ ! -e "$CACHE/apt-archives/${d##*/}" ] || continue
        cp "$d" "$CACHE/apt-archives/.${d##*/}.tmp" && mv "$CACHE/apt-archives/.${d##*/}.tmp" "$CACHE/apt-archives/${d##*/}"
    done
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    set +e
    local p
    for p in $RUN_PID $CHILD; do
        kill "$p" 2>/dev/null
    done
    if [ -n "$BUILD_TMP" ] && [ -d "$BUILD_TMP" ]; then
        kill_chroot_procs "$BUILD_TMP/root"
        safe_rm "$BUILD_TMP"
    fi
    if [ -n "$ROOT" ] && [ -d "$ROOT" ]; then
        kill_chroot_procs "$ROOT"
        umount_under "$ROOT"
        save_debs
    fi
    if [ -n "$WORK" ] && [ -d "$WORK" ]; then
        if [ "${SLUICE_FRESH_KEEP:-}" = 1 ]; then
            echo "fresh-check: kept $WORK (chroot in root/, logs in logs/)" >&2
        elif [ "$rc" -ne 0 ]; then
            # Keep the logs of a failed run, not the chroot.
            mkdir -p "$CACHE/last-failure"
            rm -rf "$CACHE/last-failure/logs"
            cp -a "$WORK/logs" "$CACHE/last-failure/" 2>/dev/null
            safe_rm "$WORK"
            echo "fresh-check: logs of this failed run: $CACHE/last-failure/logs" >&2
        else
            safe_rm "$WORK"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# Run a shell command inside the chroot, in /src, with a clean environment
# (what root's login shell on a fresh machine has, and nothing of ours).
in_root() {
    chroot "$ROOT" /usr/bin/env -i HOME=/root PATH="$CHROOT_PATH" LANG=C.UTF-8 \
        TERM=dumb /bin/sh -c "cd /src && $1" </dev/null
}

# Run a step whose output goes to a log; on failure show its tail.
step() {
    local name=$1 cmd=$2 log="$WORK/logs/$1.log" rc=0
    say "$name: $cmd  (log: $log)"
    fg_wait in_root "$cmd" >"$log" 2>&1 || rc=$?
    if [ "$rc" -ne 0 ]; then
        tail -n 60 "$log" >&2
        die "$name failed (exit $rc): $cmd"
    fi
}

# --- the cached minbase chroot --------------------------------------------
BASE="$CACHE/$SUITE-minbase.tar.gz"

build_base() {
    command -v debootstrap >/dev/null || {
        say "installing debootstrap"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap >/dev/null ||
            { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive \
              apt-get install -y -q --no-install-recommends debootstrap >/dev/null; } ||
            die "cannot install debootstrap"
    }
    local tmp
    tmp=$(mktemp -d "$CACHE/build.XXXXXX")
    BUILD_TMP=$tmp
    say "debootstrap --variant=minbase $SUITE from $MIRROR (log: $tmp/debootstrap.log)"
    if ! fg_wait debootstrap --variant=minbase "$SUITE" "$tmp/root" "$MIRROR" >"$tmp/debootstrap.log" 2>&1; then
        tail -n 30 "$tmp/debootstrap.log" >&2
        cp "$tmp/debootstrap.log" "$CACHE/debootstrap.log"
        die "debootstrap failed; its log: $CACHE/debootstrap.log"
    fi
    umount_under "$tmp/root"
    # What a machine just installed has: no downloaded .debs, no package lists.
    find "$tmp/root/var/cache/apt/archives" -name '*.deb' -delete
    find "$tmp/root/var/lib/apt/lists" -maxdepth 1 -type f -delete
    tar -C "$tmp/root" --numeric-owner -cpzf "$BASE.tmp" . || die "cannot write $BASE.tmp"
    mv "$BASE.tmp" "$BASE"
    cp "$tmp/debootstrap.log" "$CACHE/"
    safe_rm "$tmp"
    BUILD_TMP=
}

mkdir -p "$CACHE" "$CACHE/apt-archives"
# One run at a time makes the tarball; the others wait for it.
exec 9>"$CACHE/base.lock"
flock 9
if [ "${SLUICE_FRESH_REFRESH:-}" = 1 ] || [ ! -s "$BASE" ] ||
   [ -n "$(find "$BASE" -mtime +$BASE_MAX_AGE_DAYS)" ]; then
    build_base
else
    say "cached $SUITE minbase: $BASE"
fi
flock -u 9
exec 9>&-

# --- unpack, copy the tree in, mount -------------------------------------
mkdir -p "$WORKBASE"
WORK=$(mktemp -d "$WORKBASE/sluice-fresh.XXXXXX")
ROOT="$WORK/root"
mkdir -p "$ROOT" "$WORK/logs"
tar -C "$ROOT" --numeric-owner -xpzf "$BASE"

git -C "$TOP" rev-parse --verify -q "$REV^{commit}" >/dev/null || die "no commit $REV in $TOP"
say "copying $(git -C "$TOP" rev-parse --short "$REV") ($REV) into the chroot's /src"
if [ -n "$(git -C "$TOP" status --porcelain --untracked-files=no)" ]; then
    say "note: uncommitted changes in $TOP are not part of the check"
fi
mkdir -p "$ROOT/src"
git -C "$TOP" archive --format=tar "$REV" | tar -C "$ROOT/src" -xf -

# What the installer of a real machine writes and debootstrap may not.
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
if ! grep -qs localhost "$ROOT/etc/hosts"; then
    printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$ROOT/etc/hosts"
fi
chmod 1777 "$ROOT/tmp"

mount -t proc proc "$ROOT/proc"
# A minimal /dev: the usual nodes, ptys and a tmpfs /dev/shm.
mount -t tmpfs -o mode=755,nosuid dev "$ROOT/dev"
for n in "null 1 3" "zero 1 5" "full 1 7" "random 1 8" "urandom 1 9" "tty 5 0"; do
    set -- $n
    mknod -m 666 "$ROOT/dev/$1" c "$2" "$3"
done
ln -s /proc/self/fd "$ROOT/dev/fd"
ln -s /proc/self/fd/0 "$ROOT/dev/stdin"
ln -s /proc/self/fd/1 "$ROOT/dev/stdout"
ln -s /proc/self/fd/2 "$ROOT/dev/stderr"
mkdir -m 755 "$ROOT/dev/pts"
mkdir -m 1777 "$ROOT/dev/shm"
if mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts "$ROOT/dev/pts" 2>/dev/null; then
    ln -s pts/ptmx "$ROOT/dev/ptmx"
fi
mount -t tmpfs -o mode=1777,nosuid,nodev shm "$ROOT/dev/shm"
# apt's downloads are kept between runs (only the downloading is saved:
# install-deps.sh still has to ask for every package). Copied in and out,
# not shared, so that two runs at once do not fight over apt's lock.
cp -l "$CACHE"/apt-archives/*.deb "$ROOT/var/cache/apt/archives/" 2>/dev/null ||
    cp "$CACHE"/apt-archives/*.deb "$ROOT/var/cache/apt/archives/" 2>/dev/null || true

# --- 1. make run ----------------------------------------------------------
step install-deps-build "./install-deps.sh --build"

PORT=$("$HOST_PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
say "make-run: make run RUN_PORT=$PORT in the background (log: $WORK/logs/make-run.log)"
in_root "exec make run RUN_PORT=$PORT" >"$WORK/logs/make-run.log" 2>&1 &
RUN_PID=$!

run_failed() {
    tail -n 60 "$WORK/logs/make-run.log" >&2
    if [ -f "$ROOT/src/run/log/maillog" ]; then
        echo "--- run/log/maillog:" >&2; tail -n 30 "$ROOT/src/run/log/maillog" >&2
    fi
    die "make run: $*"
}

# It builds first: give it up to 30 minutes to listen.
for _ in $(seq 1800); do
    kill -0 "$RUN_PID" 2>/dev/null || run_failed "exited before it listened on 127.0.0.1:$PORT"
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then break; fi
    sleep 1
done
(exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null || run_failed "not listening on 127.0.0.1:$PORT after 30 minutes"
say "make-run: listening on 127.0.0.1:$PORT"

# One message over SMTP (smtplib outside the chroot; local_hostname given so
# that smtplib does not look this machine's name up in DNS) ...
"$HOST_PYTHON" - "$PORT" <<'EOF' || run_failed "SMTP submission failed"
import smtplib, sys
msg = ("From: fresh@example.test\r\nTo: user@localhost\r\n"
       "Subject: fresh-check over SMTP\r\n\r\nhello from fresh-check\r\n")
with smtplib.SMTP("127.0.0.1", int(sys.argv[1]), local_hostname="fresh-check.test", timeout=60) as s:
    s.sendmail("fresh@example.test", ["user@localhost"], msg)
EOF
# ... and one with sendmail, as the README shows.
in_root "printf 'Subject: fresh-check with sendmail\n\nhello from fresh-check\n' | bin/sendmail -C /src/run user@localhost" \
    >>"$WORK/logs/sendmail.log" 2>&1 || { cat "$WORK/logs/sendmail.log" >&2; run_failed "bin/sendmail failed"; }

landed() {
    local d="$ROOT/src/run/mail/user/new"
    [ -d "$d" ] &&
        grep -lqs 'Subject: fresh-check over SMTP' "$d"/* &&
        grep -lqs 'Subject: fresh-check with sendmail' "$d"/*
}
for _ in $(seq 120); do landed && break; sleep 1; done
landed || run_failed "the two messages did not land in run/mail/user/new/ within 2 minutes"
say "make-run: both messages landed in run/mail/user/new/"

step sluice-stop "bin/sluice -c /src/run stop"
for _ in $(seq 60); do kill -0 "$RUN_PID" 2>/dev/null || break; sleep 1; done
if kill -0 "$RUN_PID" 2>/dev/null; then
    run_failed "still running 60 s after sluice stop"
fi
wait "$RUN_PID" || true        # make reports master's exit by signal; not ours to judge
RUN_PID=

# ./install-deps.sh --build must not have brought the test tools.
extra=
for p in $TEST_ONLY_PROBES; do
    if in_root "dpkg-query -W -f='\${Status}' $p 2>/dev/null | grep -q 'ok installed'"; then
        extra="$extra $p"
    fi
done
[ -z "$extra" ] || die "./install-deps.sh --build installed test-only packages:$extra"
say "install-deps --build: none of the test-only packages ($TEST_ONLY_PROBES) installed"

# --- 2. make check --------------------------------------------------------
say "make-check: CI=true make check PYTEST_FLAGS=-rs ${SLUICE_FRESH_MAKEFLAGS:-} (log: $WORK/logs/make-check.log)"
# in_root CMD with its output shown and written to LOG too; CMD's status.
in_root_tee() {
    in_root "$2" 2>&1 | tee "$1"
    return "${PIPESTATUS[0]}"
}
rc=0
fg_wait in_root_tee "$WORK/logs/make-check.log" "CI=true make check PYTEST_FLAGS=-rs ${SLUICE_FRESH_MAKEFLAGS:-}" || rc=$?
if [ "$rc" -ne 0 ]; then
    die "make check failed in the fresh chroot (exit $rc) after $(elapsed)"
fi
# As root on a fresh machine with every package installed, no test has a
# reason to skip: a skip here is most often a tool install-deps.sh forgot.
if grep -q '^SKIPPED' "$WORK/logs/make-check.log"; then
    grep '^SKIPPED' "$WORK/logs/make-check.log" >&2
    if [ "${SLUICE_FRESH_ALLOW_SKIPS:-}" != 1 ]; then
        die "make check passed but pytest skipped tests (above): a package missing from install-deps.sh? (SLUICE_FRESH_ALLOW_SKIPS=1 accepts skips)"
    fi
    say "make check passed; pytest skipped tests (above), accepted (SLUICE_FRESH_ALLOW_SKIPS=1)"
fi
say "passed: make run and make check on a fresh Debian $SUITE minbase, in $(elapsed)"
exit 0
}
