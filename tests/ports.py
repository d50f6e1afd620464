"""ports - free loopback ports that no other test process is handed

free_port() of conftest, sink.dead_port() and the DNS fixture all come
here. A port taken with bind(("127.0.0.1", 0)) and closed again comes from
the kernel's ephemeral range: under `pytest -n N` (make check runs the
system tests in parallel) another worker can be handed the same one before
the daemon meant to listen on it has started, and any outgoing connection of
any process may use it as its local port meanwhile. So:

- ports are picked below the ephemeral range (net.ipv4.ip_local_port_range),
  where the kernel never hands out a port by itself, starting at a random
  place and walking on, so that one process rarely reuses a port soon;
- a port is reserved by binding the abstract unix socket
  "\\0sluice-test-port-PORT": one holder on the whole machine, whatever
  process, worker or checkout it is (two make checks at once too), and the
  kernel drops it when the process ends. A process keeps its last HOLD
  reservations (a module-scoped instance keeps its port long after it
  picked it) and lets the oldest go;
- the port must also be free right now: TCP (and UDP when asked) binds on
  127.0.0.1 without SO_REUSEADDR succeed, so a port in TIME_WAIT or used by
  a program outside the tests is skipped.
"""

import collections
import errno
import random
import socket
import threading

LOW = 10000                     # below: well-known services of a test box
HOLD = 256                      # reservations one process keeps
_held = collections.OrderedDict()   # port -> abstract unix socket
_lock = threading.Lock()
_next = None


def _range():
    """[low, high) of the ports handed out."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            eph_low, eph_high = (int(x) for x in f.read().split())
    except (OSError, ValueError):
        eph_low, eph_high = 32768, 60999
    if eph_low - LOW >= 2000:
        return LOW, eph_low
    if 65536 - (eph_high + 1) >= 2000:
        return eph_high + 1, 65536
    return 1024, 65536          # no room outside it: the locks still hold


def _reserve(port):
    """The abstract unix socket that reserves port, or None when another
    process holds it."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.bind(b"\0sluice-test-port-%d" % port)
    except OSError as e:
        s.close()
        if e.errno == errno.EADDRINUSE:
            return None
        raise
    return s


def _bindable(port, kind):
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(udp=False):
    """A port on 127.0.0.1 free for TCP (and for UDP when udp is true)
    that no other process gets from free_port() while this one holds it."""
    global _next
    low, high = _range()
    span = high - low
    with _lock:
        if _next is None:
            _next = random.randrange(span)
        for _ in range(span):
            port = low + _next % span
            _next = (_next + 1) % span
            if port in _held:
                continue
            res = _reserve(port)
            if res is None:
                continue
            if not _bindable(port, socket.SOCK_STREAM) or \
                    (udp and not _bindable(port, socket.SOCK_DGRAM)):
                res.close()
                continue
            _held[port] = res
            while len(_held) > HOLD:
                _held.popitem(last=False)[1].close()
            return port
    raise RuntimeError("no free port in %d-%d" % (low, high - 1))
