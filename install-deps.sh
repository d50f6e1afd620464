#!/bin/sh
# install-deps.sh - install the Debian 12 packages sluice needs
#
#   ./install-deps.sh                  everything: the build and the tests
#                                      (what `make check` needs)
#   ./install-deps.sh --build          only what `make`, `make install` and
#                                      `make run` need: a production box gets
#                                      no clang, valgrind, swaks or pytest
#   ./install-deps.sh [--build] --check
#                                      exit 0 when nothing of that set is
#                                      missing; otherwise, as root, install
#                                      it, else print the exact apt-get line
#                                      and exit 1 (the Makefile uses this)
#   ./install-deps.sh [--build] --list print the set's package names
#
# `make fresh-check` (tests/fresh/fresh-check.sh) proves these lists on a
# freshly installed Debian 12: a package missing here fails it.
set -u

# The compiler and the -dev packages ./configure looks for with pkg-config,
# with what their .pc files require in turn: libunbound.pc names nettle and
# hogweed (Requires.private), so pkg-config reports libunbound as missing
# without nettle-dev. libhiredis-dev: qmgr's shared shaping limits.
# libsasl2-modules: the Cyrus SASL mechanisms smtpd's
# AUTH offers (PLAIN, LOGIN, CRAM-MD5, SCRAM; sasldb comes with libsasl2-2).
# publicsuffix: not built against, read when the spf daemon runs: the Public
# Suffix List DMARC's organizational domains come from
# (dmarc_public_suffix_list; without it, the last two labels, said in the log).
BUILD="gcc make pkg-config libc6-dev libevent-dev libssl-dev libunbound-dev
nettle-dev libdb5.3-dev libpcre2-dev libsasl2-dev libsasl2-modules libspf2-dev
libopendkim-dev libopendmarc-dev libjansson-dev libcmocka-dev
libcurl4-openssl-dev libsqlite3-dev librdkafka-dev libhiredis-dev publicsuffix"

# The tests: pytest (with pytest-xdist: make check runs the system tests in
# parallel workers) and its SMTP sinks, the loopback DNS server, the tools the
# system tests run (strace, valgrind, the sanitizers' runtime for clang), and
# the ordinary commands a test may call that a minimal Debian lacks: ps/pgrep
# (procps), ip/ss (iproute2), runuser/su/setpriv/prlimit (util-linux),
# useradd (passwd), fuser (psmisc), openssl, file, lsof, socat; mandoc (the
# man pages' lint and html/), logrotate (the shipped snippet is tried),
# systemd (systemd-analyze verify checks the shipped unit; nothing is booted),
# and the log tools the shipped files serve: pflogsumm, fail2ban
# (fail2ban-regex on the filter) and logwatch; clang-format (make lint
# checks the C against .clang-format). dkimpy (python3-dkim) verifies the
# DKIM signatures cleanup makes; pyspf (python3-spf) is the oracle for the
# SPF results of the spf daemon and python3-authres parses the
# Authentication-Results: headers smtpd writes; python3-milter (pymilter on
# libmilter) runs the test milter of tests/test_milter.py, where OpenDKIM
# (opendkim) signs as a milter. sasl2-bin: saslpasswd2
# makes the AUTH tests' private sasldb; libnet-ssleay-perl and
# libio-socket-ssl-perl let swaks speak TLS (--tls). curl: the HTTP API's
# tests send with it as the README does. kcat reads back what the events
# daemon produced to the tests' Kafka cluster (librdkafka's mock, built in
# events/), and clickhouse-server (with clickhouse-client) consumes it with
# the shipped DDL (conf/clickhouse-events.sql). python3-dnspython and
# python3-cryptography: tests/dnssec_server.py signs a DNSSEC zone and
# serves it on loopback for the DANE tests; nsd (a real authoritative
# server) serves a zone that ldnsutils' ldns-signzone signed, for the same
# tests (tests/dnssec.py NsdDns; only started by the tests, on loopback).
# opendkim-tools:
# opendkim-testkey checks the record `sluice dkim keygen` prints against
# its key. python3-nacl: dkimpy's Ed25519 (RFC 8463). redis-server: the
# shared shaping limits' tests start their own (tests/test_shaping_redis.py).
# postfix: a TLS peer we did not write (tests/test_tls_postfix.py runs
# posttls-finger and private Postfix instances; `make bench` too); it is
# preseeded "No configuration" below, so it is not made the system MTA and
# nothing of it listens on port 25.
# prometheus: promtool checks /metrics and conf/sluice-alerts.yml, and a
# real Prometheus scrapes an instance (tests/test_metrics.py).
TEST="python3 python3-pytest python3-pytest-xdist python3-yaml python3-aiosmtpd python3-dkim python3-spf python3-authres
python3-dnspython python3-cryptography nsd ldnsutils opendkim-tools python3-nacl python3-milter opendkim
dnsmasq-base swaks strace
valgrind clang libclang-rt-14-dev clang-format procps iproute2 util-linux passwd login
psmisc openssl ca-certificates file lsof socat netcat-openbsd mandoc
logrotate systemd pflogsumm fail2ban logwatch sasl2-bin libnet-ssleay-perl
libio-socket-ssl-perl curl kcat clickhouse-server clickhouse-client redis-server prometheus
postfix"

usage() {
    echo "usage: $0 [--build] [--check | --list]" >&2
    exit 2
}

set_=full
mode=install
for arg in "$@"; do
    case $arg in
    --build) set_=build ;;
    --check) mode=check ;;
    --list) mode=list ;;
    -h|--help) sed -n '2,/^$/s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) usage ;;
    esac
done

if [ $set_ = build ]; then
    PACKAGES=$BUILD
else
    PACKAGES="$BUILD $TEST"
fi

if [ $mode = list ]; then
    echo $PACKAGES
    exit 0
fi

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
case " $missing " in
*" postfix "*)
    echo "postfix postfix/main_mailer_type select No configuration" |
        debconf-set-selections ;;
esac
apt-get update -q || exit 1
apt-get install -y -q --no-install-recommends $missing || exit 1
