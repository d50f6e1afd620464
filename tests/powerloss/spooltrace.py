"""spooltrace - replay an strace of sluice's daemons as spool crash states

Input: the text of `strace -f -ttt -xx -s BIG -y -e trace=...` run over a
whole instance (see STRACE_ARGS), and a copy of the queue directory taken
before the run. Output: the ordered file-system operations on the spool
(create, write extent, truncate, fsync of a file or a directory, rename,
unlink, mkdir, rmdir), the acknowledgements smtpd wrote ("250 ... queued as
QID") and the deliveries a delivery agent reported as sent to qmgr ("action=sent"
results on the connection that asked it to deliver QID), and, for every crash point between two spool
operations, the state a power cut there may leave, in three models:

  posix     the strict POSIX model: a file's data is durable only as of
            its last fsync/fdatasync (else empty); a directory entry made
            by create, rename, unlink, mkdir or rmdir is durable only after
            an fsync of that directory (a rename is taken as one atomic
            change, made durable by an fsync of either directory); an entry
            is visible only when every directory above it is durable.
  writeback every namespace operation reached the disk, in order, but file
            data only as of its last fsync (ext4 data=writeback, or a file
            system without rename-over-data ordering): catches a rename of
            a file whose data was never forced out.
  process   everything the kernel was told (all processes killed, no power
            cut): the state a crash of the daemons themselves leaves.

What the replay does not model: disk caches that ignore flushes, file
system bugs, torn sectors, reordering inside one write(2), and crash states
in which only some of the operations that were not yet forced out survived
(the posix model keeps none of them, writeback keeps all namespace ones).

strace prints every string in hex (-xx), so paths and data are exact.
"""

import os
import re
from collections import namedtuple

STRACE_ARGS = ["-f", "-ttt", "-xx", "-s", "16777216", "-y",
               "-e", "trace=file,desc,fsync,fdatasync,sync,syncfs,network"]

MODELS = ("posix", "writeback", "process")
QUEUES = ("incoming", "active", "deferred", "hold")

_LINE = re.compile(r"^(\d+)\s+(\d+\.\d+)\s+(.*)$")
_UNFINISHED = re.compile(r"^(\w+)\((.*?)\s*<unfinished \.\.\.>$")
_RESUMED = re.compile(r"^<\.\.\. (\w+) resumed>\s?(.*)$")
_CALL = re.compile(r"^(\w+)\((.*)\)\s+=\s+(-?\d+|-?0x[0-9a-f]+|\?)(.*)$")
_HEX = re.compile(r'"((?:\\x[0-9a-f]{2})*)"')
_ANNOT = re.compile(r"<((?:\\x[0-9a-f]{2})+)>")
_FD = re.compile(r"^(-?\d+)(?:<((?:\\x[0-9a-f]{2})*)>)?")
_QID_ACK = re.compile(rb"250 2\.0\.0 Ok: queued as ([0-9A-Za-z]+)")
_DELIVER = re.compile(rb"request=7:deliver\n(?:.*\n)*?queue_id=\d+:([0-9A-Za-z]+)\n")

# Call: one completed system call. start/end are the trace line numbers of
# its entry and of its return (equal when strace printed it on one line).
Call = namedtuple("Call", "start end pid name args ret strings fd fdpath")
# Op: one spool operation, effective at trace line `line`.
Op = namedtuple("Op", "line kind a b data")


def _unhex(s):
    return bytes.fromhex(s.replace("\\x", ""))


def parse_calls(text):
    """The completed system calls of the trace, in order of their return."""
    pending = {}
    calls = []
    for lineno, line in enumerate(text.splitlines()):
        m = _LINE.match(line.strip())
        if not m:
            continue
        pid, rest = int(m.group(1)), m.group(3)
        u = _UNFINISHED.match(rest)
        if u:
            pending[pid] = (lineno, u.group(1), u.group(2))
            continue
        start = lineno
        r = _RESUMED.match(rest)
        if r:
            if pid not in pending or pending[pid][1] != r.group(1):
                continue
            start, name, head = pending.pop(pid)
            rest = "%s(%s%s" % (name, head, r.group(2))
        c = _CALL.match(rest)
        if not c:
            continue
        name, args, ret = c.group(1), c.group(2), c.group(3)
        fd, fdpath = None, None
        f = _FD.match(args)
        if f:
            fd = int(f.group(1))
            if f.group(2):
                fdpath = _unhex(f.group(2))
        strings = [_unhex(s) for s in _HEX.findall(_ANNOT.sub("", args))]
        ret = None if ret == "?" else int(ret, 0)
        calls.append(Call(start, lineno, pid, name, args, ret, strings, fd,
                          fdpath))
    return calls


class _Inode:
    def __init__(self, number, is_dir, data=b""):
        self.number = number
        self.is_dir = is_dir
        self.data = bytearray(data)     # what the kernel holds
        self.durable = bytes(data)      # what an fsync forced out


class SpoolTrace:
    """The spool operations, acknowledgements and deliveries of one trace."""

    def __init__(self, text, queue_dir, before):
        """text: the strace output; queue_dir: the spool's path during the
        run; before: the folder holding a copy of it taken before."""
        self.root = os.path.normpath(queue_dir).encode()
        self.ops = []
        self.acks = {}          # qid -> trace line where its 250 began
        self.delivered = {}     # qid -> trace line of its last "sent" result
        self.initial = {}       # relative path -> (is_dir, bytes)
        for dirpath, dirnames, filenames in os.walk(before):
            rel = os.path.relpath(dirpath, before)
            rel = b"" if rel == "." else os.fsencode(rel)
            if rel:
                self.initial[rel] = (True, b"")
            for f in filenames:
                p = os.path.join(dirpath, f)
                if os.path.isfile(p) and not os.path.islink(p):
                    with open(p, "rb") as fh:
                        self.initial[os.path.join(rel, os.fsencode(f))] = (
                            False, fh.read())
        self._scan(parse_calls(text))

    # --- trace -> operations ------------------------------------------------

    def _rel(self, path):
        """path relative to the spool root, or None when outside it."""
        if path is None:
            return None
        path = os.path.normpath(path)
        if path == self.root:
            return b""
        if path.startswith(self.root + b"/"):
            return path[len(self.root) + 1:]
        return None

    def _scan(self, calls):
        fds = {}                # (pid, fd) -> [relpath at open, offset, append]
        deliveries = {}         # (pid, fd) -> qid that connection asked for
        for c in calls:
            n = c.name
            # acknowledgements and deliveries, from socket traffic
            if n in ("write", "writev", "sendto", "sendmsg") and c.ret and \
                    c.ret > 0 and (c.fdpath or b"").startswith((b"socket:", b"TCP")):
                for s in c.strings:
                    for m in _QID_ACK.finditer(s):
                        self.acks.setdefault(m.group(1).decode(), c.start)
            # A delivery agent reads "request=deliver ... queue_id=QID" on
            # a connection from qmgr and writes "action=sent" results back
            # on it only after the server's 250: the last such result is
            # when the server had every recipient it accepted.
            if n in ("read", "readv", "recvfrom", "recvmsg") and c.ret and c.ret > 0:
                m = _DELIVER.search(b"".join(c.strings))
                if m:
                    deliveries[(c.pid, c.fd)] = m.group(1).decode()
            if n in ("write", "writev", "sendto", "sendmsg") and c.ret and \
                    c.ret > 0 and (c.pid, c.fd) in deliveries and \
                    b"request=6:result\n" in b"".join(c.strings) and \
                    b"action=4:sent\n" in b"".join(c.strings):
                self.delivered[deliveries[(c.pid, c.fd)]] = c.start
            if c.ret is None or c.ret < 0:
                continue
            self._file_op(c, fds)

    def _fd_entry(self, c, fds):
        """The open-file entry for c's fd: from this trace's open, else
        from strace -y's annotation (an fd inherited across fork)."""
        ent = fds.get((c.pid, c.fd))
        if ent is None:
            rel = self._rel(c.fdpath)
            if rel is None:
                return None
            ent = fds[(c.pid, c.fd)] = [rel, 0, False]
        return ent

    def _file_op(self, c, fds):
        n, ops = c.name, self.ops
        if n in ("open", "openat", "creat"):
            if not c.strings:
                return
            path = c.strings[0]
            if not path.startswith(b"/"):
                base = c.fdpath if n == "openat" and c.fdpath else None
                if base is None:
                    return
                path = os.path.join(base, path)
            rel = self._rel(path)
            fds.pop((c.pid, c.ret), None)
            if rel is None:
                return
            flags = c.args
            fds[(c.pid, c.ret)] = [rel, 0, "O_APPEND" in flags]
            if "O_CREAT" in flags or n == "creat":
                ops.append(Op(c.end, "create", rel, None, None))
            if "O_TRUNC" in flags or n == "creat":
                ops.append(Op(c.end, "truncate", rel, 0, None))
            if "O_SYNC" in flags or "O_DSYNC" in flags:
                fds[(c.pid, c.ret)].append("sync")
            return
        if n == "close":
            fds.pop((c.pid, c.fd), None)
            return
        if n in ("dup", "dup2", "dup3") or (n == "fcntl" and "F_DUPFD" in c.args):
            ent = fds.get((c.pid, c.fd))
            if ent is not None:
                fds[(c.pid, c.ret)] = ent       # shares the offset
            else:
                fds.pop((c.pid, c.ret), None)
            return
        if n in ("rename", "renameat", "renameat2"):
            if len(c.strings) >= 2:
                a, b = self._rel(c.strings[0]), self._rel(c.strings[-1])
                if a is not None and b is not None:
                    ops.append(Op(c.end, "rename", a, b, None))
                elif a is not None:
                    ops.append(Op(c.end, "unlink", a, None, None))
                elif b is not None:
                    raise ValueError("rename into the spool from outside: %r" % (c,))
            return
        if n in ("unlink", "unlinkat", "rmdir"):
            rel = self._rel(c.strings[0]) if c.strings else None
            if rel is not None:
                kind = "rmdir" if n == "rmdir" or "AT_REMOVEDIR" in c.args else "unlink"
                ops.append(Op(c.end, kind, rel, None, None))
            return
        if n in ("mkdir", "mkdirat"):
            rel = self._rel(c.strings[0]) if c.strings else None
            if rel is not None:
                ops.append(Op(c.end, "mkdir", rel, None, None))
            return
        if n in ("sync", "syncfs"):
            ops.append(Op(c.end, "sync", None, None, None))
            return
        if c.fd is None:
            return
        if n in ("write", "writev", "pwrite64", "pwritev", "lseek",
                 "ftruncate", "fsync", "fdatasync"):
            ent = self._fd_entry(c, fds)
            if ent is None:
                return
            rel = ent[0]
            if n in ("write", "writev"):
                data = b"".join(c.strings)[:c.ret]
                off = None if ent[2] else ent[1]
                ops.append(Op(c.end, "write", rel, off, data))
                ent[1] += len(data)
            elif n in ("pwrite64", "pwritev"):
                data = b"".join(c.strings)[:c.ret]
                m = re.search(r",\s*(\d+)\s*$", c.args)
                ops.append(Op(c.end, "write", rel, int(m.group(1)), data))
            elif n == "lseek":
                ent[1] = c.ret
            elif n == "ftruncate":
                m = re.search(r",\s*(\d+)\s*$", c.args)
                ops.append(Op(c.end, "truncate", rel, int(m.group(1)), None))
            else:
                ops.append(Op(c.end, "fsync", rel, None, None))
            if len(ent) > 3 and n not in ("lseek", "fsync", "fdatasync"):
                ops.append(Op(c.end, "fsync", rel, None, None))

    # --- operations -> crash states ---------------------------------------

    def crash_points(self):
        """Yield (k, line, acked, delivered, states) for k = 0 .. len(ops):
        the crash after the first k operations. acked: the queue IDs whose
        250 began before operation k+1 returned (a client may have seen
        it); delivered: those whose last "sent" result began before
        operation k returned. states: {model: {relpath: bytes or None for
        a directory}}."""
        fs = _Replay(self.initial)
        ends = [op.line for op in self.ops] + [float("inf")]
        for k in range(len(self.ops) + 1):
            if k:
                fs.apply(self.ops[k - 1])
            limit = ends[k]
            done = ends[k - 1] if k else -1
            acked = {q for q, l in self.acks.items() if l < limit}
            delivered = {q for q, l in self.delivered.items() if l < done}
            yield k, (ends[k - 1] if k else 0), acked, delivered, {
                m: fs.state(m) for m in MODELS}


class _Replay:
    """The kernel's view and the durable view of the spool."""

    def __init__(self, initial):
        self.count = 0
        self.vol = {}           # relpath -> inode, what the kernel has
        self.dur = {}           # relpath -> inode, what fsyncs forced out
        self.meta = {}          # relpath -> inode, all namespace ops in order
        self.pending = []       # namespace ops not yet durable
        for rel, (is_dir, data) in sorted(initial.items()):
            ino = self._inode(is_dir, data)
            self.vol[rel] = self.dur[rel] = self.meta[rel] = ino

    def _inode(self, is_dir, data=b""):
        self.count += 1
        return _Inode(self.count, is_dir, data)

    @staticmethod
    def _ns_apply(ns, op, vol_ino):
        kind, a, b = op
        if kind in ("create", "mkdir"):
            ns[a] = vol_ino
        elif kind in ("unlink", "rmdir"):
            ns.pop(a, None)
        elif kind == "rename":
            ino = ns.pop(a, None)
            if ino is None:
                ino = vol_ino
            if ino is not None and ino.is_dir:
                for p in [p for p in ns if p.startswith(a + b"/")]:
                    ns[b + p[len(a):]] = ns.pop(p)
            ns[b] = ino

    def _ns(self, kind, a, b=None):
        """One namespace change: applied to vol and meta now, to dur when
        a directory it touches is fsynced."""
        ino = self.vol.get(a)
        if kind == "create":
            if ino is not None:
                return
            ino = self.vol[a] = self._inode(False)
        elif kind == "mkdir":
            ino = self.vol[a] = self._inode(True)
        elif kind in ("unlink", "rmdir"):
            self.vol.pop(a, None)
        elif kind == "rename":
            if ino is None:
                return
            self._ns_apply(self.vol, (kind, a, b), ino)
        rec = (kind, a, b)
        self._ns_apply(self.meta, rec, ino)
        self.pending.append((rec, ino))

    def _sync_dir(self, rel):
        keep = []
        for rec, ino in self.pending:
            kind, a, b = rec
            dirs = {os.path.dirname(a)} | ({os.path.dirname(b)} if b else set())
            if rel in dirs:
                self._ns_apply(self.dur, rec, ino)
            else:
                keep.append((rec, ino))
        self.pending = keep

    def apply(self, op):
        kind, a, b = op.kind, op.a, op.b
        if kind in ("create", "mkdir", "unlink", "rmdir", "rename"):
            self._ns(kind, a, b)
            return
        if kind == "sync":
            for rec, ino in self.pending:
                self._ns_apply(self.dur, rec, ino)
            self.pending = []
            for ino in set(self.vol.values()):
                ino.durable = bytes(ino.data)
            return
        ino = self.vol.get(a)
        if ino is None:
            return
        if kind == "write":
            off = len(ino.data) if b is None else b
            if off > len(ino.data):
                ino.data.extend(b"\0" * (off - len(ino.data)))
            ino.data[off:off + len(op.data)] = op.data
        elif kind == "truncate":
            del ino.data[b:]
            if b > len(ino.data):
                ino.data.extend(b"\0" * (b - len(ino.data)))
        elif kind == "fsync":
            if ino.is_dir:
                self._sync_dir(a)
            else:
                ino.durable = bytes(ino.data)

    def state(self, model):
        """{relpath: bytes, or None for a directory} a crash leaves."""
        ns = {"posix": self.dur, "writeback": self.meta,
              "process": self.vol}[model]
        out = {}
        for rel, ino in ns.items():
            parent, ok = os.path.dirname(rel), True
            while parent:
                if parent not in ns or not ns[parent].is_dir:
                    ok = False
                    break
                parent = os.path.dirname(parent)
            if not ok:
                continue
            if ino.is_dir:
                out[rel] = None
            elif model == "process":
                out[rel] = bytes(ino.data)
            else:
                out[rel] = ino.durable
        return out


def queue_files(state):
    """{qid: [(relpath, bytes)]} of the files a queue manager would take
    (incoming/, active/, deferred/*/, hold/; no .tmp. files)."""
    out = {}
    for rel, data in state.items():
        if data is None:
            continue
        parts = rel.decode(errors="replace").split("/")
        if parts[0] not in QUEUES or parts[-1].startswith("."):
            continue
        if parts[0] == "deferred" and len(parts) != 3:
            continue
        if parts[0] != "deferred" and len(parts) != 2:
            continue
        out.setdefault(parts[-1], []).append((rel, data))
    return out


def write_state(state, dest):
    """Materialize a crash state under the folder dest."""
    os.makedirs(dest, exist_ok=True)
    for rel in sorted(state, key=lambda p: p.count(b"/")):
        path = os.path.join(os.fsencode(dest), rel)
        if state[rel] is None:
            os.makedirs(path, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as fh:
                fh.write(state[rel])
            os.chmod(path, 0o600)
