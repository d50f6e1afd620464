"""proto - sluice's attribute protocol (global/attr.h) from Python

Tests use it to talk to a daemon's private socket directly (play qmgr to an
agent, or an agent to qmgr) and to read or write dsn_log files.

Wire form of a list: NAME '=' LENGTH ':' VALUE '\\n' ... then a lone '\\n'.
A list is a Python list of (name, value) pairs, value bytes or str or int.
"""

import socket
import time


def encode(pairs):
    """The wire bytes of one list."""
    out = bytearray()
    for name, value in pairs:
        if isinstance(value, int):
            value = str(value)
        if isinstance(value, str):
            value = value.encode()
        out += b"%s=%d:" % (name.encode(), len(value)) + value + b"\n"
    out += b"\n"
    return bytes(out)


def decode(buf):
    """Parse one list at the start of buf: (pairs, bytes used), or
    (None, 0) when buf holds only part of a list. Values are bytes.
    Raises ValueError on malformed input."""
    pairs = []
    pos = 0
    while True:
        if pos >= len(buf):
            return None, 0
        if buf[pos:pos + 1] == b"\n":
            return pairs, pos + 1
        eq = buf.find(b"=", pos)
        if eq < 0:
            return None, 0
        colon = buf.find(b":", eq)
        if colon < 0:
            return None, 0
        name = buf[pos:eq].decode()
        if not name or not all(c.islower() or c.isdigit() or c == "_" for c in name):
            raise ValueError("bad attribute name %r" % name)
        length = int(buf[eq + 1:colon])
        end = colon + 1 + length
        if end + 1 > len(buf):
            return None, 0
        if buf[end:end + 1] != b"\n":
            raise ValueError("attribute %s: no newline after value" % name)
        pairs.append((name, buf[colon + 1:end]))
        pos = end + 1


def decode_all(buf):
    """Every whole list in buf (a dsn_log file, say); a cut list at the end
    is ignored, as dsn_log_read does."""
    lists = []
    while buf:
        pairs, used = decode(buf)
        if pairs is None:
            break
        lists.append(pairs)
        buf = buf[used:]
    return lists


def as_dict(pairs):
    """name -> str value (the last one of a name wins)."""
    return {name: value.decode(errors="replace") for name, value in pairs}


class Conn:
    """A blocking client (or accepted server side) of a UNIX stream socket."""

    def __init__(self, sock, timeout=30.0):
        self.sock = sock
        self.sock.settimeout(timeout)
        self.buf = b""

    @classmethod
    def connect(cls, path, timeout=30.0):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(str(path))
        return cls(sock, timeout)

    def send(self, pairs):
        self.sock.sendall(encode(pairs))

    def recv(self):
        """The next list as a dict, or None at EOF."""
        while True:
            pairs, used = decode(self.buf)
            if pairs is not None:
                self.buf = self.buf[used:]
                return as_dict(pairs)
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buf += chunk

    def close(self):
        self.sock.close()


def closed_without_reply(conn):
    """Did the peer close without another list? A peer that closes with
    bytes of ours unread makes Linux report ECONNRESET after what it sent
    has been read: that is a close too."""
    try:
        return conn.recv() is None
    except ConnectionResetError:
        return True


def now_usec():
    return int(time.time() * 1_000_000)
