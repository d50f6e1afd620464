"""qfile_reader - the one Python reader (and writer) of queue files for the
system tests, following global/qfile.h's record grammar:

    record   TYPE (one byte) LENGTH (4 bytes, big-endian) DATA (LENGTH bytes)
    file     S  {T F A R D, in any order}  M  {C}  E

S holds "%3d %15lld %15lld %15lld": version 1, content size (the C records),
offset of the first C record, recipient count (R and D). R and D hold
"address\\0orcpt\\0notify": three fields split at each single NUL (no field
may contain one; orcpt and notify may be empty, so "a\\0\\0" is a bare
address). Exactly one T, one F and one M; E is the last 5 bytes.

records() only frames (a test that edits bytes in place, or reads a file
another process marks); parse() checks the whole grammar, as qmgr's reader
does, and raises QfileError for a file qmgr would call corrupt.
"""

from collections import namedtuple

HDR_LEN = 5
SIZE_LEN = 51
REC_MAX = 1024 * 1024
VERSION = 1
ENVELOPE_TYPES = "TFARD"

Record = namedtuple("Record", "type offset data")
Rcpt = namedtuple("Rcpt", "address orcpt notify done offset")


class QfileError(Exception):
    """A queue file that global/qfile.c's reader rejects."""


class QueueFile:
    """A parsed queue file: time (float), sender (str, "" for <>), attrs
    {name: value}, rcpts [Rcpt], content (bytes), records [Record]."""

    def __init__(self):
        self.time = None
        self.sender = None
        self.attrs = {}
        self.rcpts = []
        self.content = b""
        self.records = []

    def addresses(self):
        return [r.address for r in self.rcpts]


def records(data):
    """[Record(type, offset, data)] of the bytes of a queue file, in file
    order; QfileError when a header or data is cut or too long."""
    pos, out = 0, []
    while pos < len(data):
        if pos + HDR_LEN > len(data):
            raise QfileError("record header cut at offset %d" % pos)
        length = int.from_bytes(data[pos + 1:pos + HDR_LEN], "big")
        if length > REC_MAX:
            raise QfileError("record at offset %d: length %d over %d"
                             % (pos, length, REC_MAX))
        if pos + HDR_LEN + length > len(data):
            raise QfileError("record at offset %d cut" % pos)
        out.append(Record(chr(data[pos]), pos,
                          bytes(data[pos + HDR_LEN:pos + HDR_LEN + length])))
        pos += HDR_LEN + length
    return out


def boundaries(data):
    """Offsets where each record starts, and the end of the file."""
    return [r.offset for r in records(data)] + [len(data)]


def split_rcpt(data):
    """(address, orcpt, notify) of the data of an R or D record."""
    fields = data.split(b"\0")
    if len(fields) != 3:
        raise QfileError("recipient record %r: not three fields" % data)
    return tuple(f.decode() for f in fields)


def parse(data):
    """Strictly parse the bytes of a queue file into a QueueFile."""
    recs = records(data)
    qf = QueueFile()
    qf.records = recs
    if not recs or recs[0].type != "S" or len(recs[0].data) != SIZE_LEN:
        raise QfileError("no SIZE record first")
    if recs[-1].type != "E" or recs[-1].data or \
            recs[-1].offset != len(data) - HDR_LEN:
        raise QfileError("no END record last")
    content = bytearray()
    content_offset = None
    for rec in recs[1:-1]:
        if content_offset is not None:
            if rec.type != "C":
                raise QfileError("record %s in the content" % rec.type)
            content += rec.data
        elif rec.type == "T":
            if qf.time is not None:
                raise QfileError("second TIME record")
            qf.time = float(rec.data)
        elif rec.type == "F":
            if qf.sender is not None:
                raise QfileError("second FROM record")
            qf.sender = rec.data.decode()
        elif rec.type == "A":
            name, eq, value = rec.data.decode().partition("=")
            if not eq or not name:
                raise QfileError("bad attribute %r" % rec.data)
            qf.attrs[name] = value
        elif rec.type in "RD":
            qf.rcpts.append(Rcpt(*split_rcpt(rec.data), rec.type == "D",
                                 rec.offset))
        elif rec.type == "M":
            if rec.data:
                raise QfileError("MESSAGE record with data")
            content_offset = rec.offset + HDR_LEN
        else:
            raise QfileError("record %s in the envelope" % rec.type)
    if content_offset is None:
        raise QfileError("no MESSAGE record")
    if qf.time is None or qf.sender is None:
        raise QfileError("no TIME or no FROM record")
    fields = recs[0].data.split()
    if len(fields) != 4:
        raise QfileError("bad SIZE record %r" % recs[0].data)
    version, size, offset, count = (int(f) for f in fields)
    if (version, size, offset, count) != (VERSION, len(content),
                                          content_offset, len(qf.rcpts)):
        raise QfileError("SIZE record %r disagrees with the file"
                         % recs[0].data)
    qf.content = bytes(content)
    return qf


def read(path):
    """parse() the queue file at path."""
    with open(path, "rb") as f:
        return parse(f.read())


def record(kind, data=b""):
    """The bytes of one record (kind: one byte)."""
    return kind + len(data).to_bytes(4, "big") + data


def build(sender, rcpts, content, attrs=(), arrival=b"1700000000.000000"):
    """The bytes of a valid queue file: sender and rcpts (bytes; rcpts
    bare addresses), attrs ("name=value" bytes), content (bytes)."""
    env = record(b"T", arrival) + record(b"F", sender)
    for a in attrs:
        env += record(b"A", a)
    for r in rcpts:
        env += record(b"R", r + b"\0\0")
    env += record(b"M")
    chunks = b"".join(record(b"C", content[i:i + REC_MAX])
                      for i in range(0, len(content), REC_MAX)) or record(b"C")
    offset = HDR_LEN + SIZE_LEN + len(env)
    size = b"%3d %15d %15d %15d" % (VERSION, len(content), offset, len(rcpts))
    assert len(size) == SIZE_LEN
    return record(b"S", size) + env + chunks + record(b"E")
