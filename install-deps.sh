#!/bin/sh
# install-deps.sh - install every Debian package sluice's build and tests need
#
#   ./install-deps.sh          install what is missing (as root)
#   ./install-deps.sh --check  exit 0 when nothing is missing; otherwise, as
#                              root install it, else print the exact
#                              apt-get line and exit 1
set -u

BUILD="gcc make pkg-config libc6-dev libevent-dev libssl-dev libunbound-dev
libdb5.3-dev libpcre2-dev libsasl2-dev libspf2-dev libopendkim-dev
libjansson-dev libcmocka-dev"
TEST="python3 python3-pytest python3-aiosmtpd dnsmasq-base swaks strace
procps passwd util-linux clang libclang-rt-14-dev valgrind"
PACKAGES="$BUILD $TEST"

missing=
for p in $PACKAGES; do
    if ! dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q 'ok installed'; then
        missing="$missing $p"
    fi
done

if [ -z "$missing" ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "sluice needs these Debian packages; as root run:" >&2
    echo "apt-get install -y$missing" >&2
    exit 1
fi
echo "install-deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q || exit 1
apt-get install -y -q --no-install-recommends $missing || exit 1
