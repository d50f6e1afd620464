"""conftest - shared fixtures and helpers for sluice's system tests

An Instance is one `sluice init` folder on a free loopback port. The
`make_instance` fixture creates as many as a test wants and ALWAYS stops them
afterwards: `sluice -c DIR stop`, then kill -9 of anything of the instance
that still runs (found through the pid file, the process tree under master,
and /proc/*/environ SLUICE_CONFIG=DIR or /proc/*/cmdline). When a test fails,
the tail of each of its instances' maillog is added to the failure report.

Nothing here waits by sleeping and hoping: wait_until() polls a condition
with a deadline. No instance asks this machine's resolver anything: `sluice
init` sets disable_dns_lookups = yes, and the fixture checks that an instance
either keeps lookups off or names only loopback resolvers in dns_servers.

Orphans: the test process is a child subreaper (prctl
PR_SET_CHILD_SUBREAPER), so a daemonized master whose `sluice start` has
exited is its child, and a thread reaps every such adopted process as soon as
it ends (processes this process started with subprocess are left to their
Popen). The init of a small VM or container may reap orphans only now and
then; `sluice stop`, which waits until master's pid is gone, then waited
about a second longer for every instance.

Environment: SLUICE_TOP is the build tree (default: the folder above this
one); the programs are $SLUICE_TOP/bin/sluice and $SLUICE_TOP/libexec/*.
"""

import os
import re
import shutil
import signal
import smtplib
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

import ports

TOP = Path(os.environ.get("SLUICE_TOP", Path(__file__).resolve().parents[1])).resolve()
BIN = TOP / "bin"
LIBEXEC = TOP / "libexec"
SLUICE = BIN / "sluice"
MASTER = LIBEXEC / "master"

CMD_TIMEOUT = 60          # seconds any one sluice command may take
LOG_TAIL_LINES = 40       # maillog lines shown for a failed test


# --- small helpers --------------------------------------------------------

def require(*paths):
    """Skip (fail under CI) unless every program in paths is built."""
    missing = [str(p) for p in paths if not os.access(p, os.X_OK)]
    if missing:
        why = "not built: " + ", ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)


def require_daemon(name):
    require(LIBEXEC / name)


def free_port(udp=False):
    """A TCP port on 127.0.0.1 that nobody listens on right now (and free
    for UDP too with udp=True), which no other test process (an xdist
    worker, another checkout's run) is handed meanwhile: tests/ports.py."""
    return ports.free_port(udp=udp)


def wait_until(predicate, timeout=30.0, interval=0.05, what=None):
    """Poll predicate until it returns something true; return that value.
    Raises AssertionError after timeout seconds (30 unless told: make
    check runs 4 workers on 2 cores, where daemon work that takes
    milliseconds alone may wait seconds for a CPU)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s"
                                 % (timeout, what or getattr(predicate, "__name__", predicate)))
        time.sleep(interval)


class EventsFollower:
    """`sluice events --follow ARGS` writing to a file, so a test can wait
    for what it printed instead of sleeping."""

    def __init__(self, inst, *args):
        self.out = tempfile.TemporaryFile(mode="w+")
        self.err = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            [str(inst.sluice), "-c", str(inst.dir), "events", "--follow"]
            + list(args), stdout=self.out, stderr=self.err, text=True)

    def wait_ready(self, timeout=20):
        """Wait until it has read the journal once and sleeps between looks
        (its first look decides what "from now" means)."""
        def sleeping():
            if self.proc.poll() is not None:
                return "exited"
            try:
                with open("/proc/%d/wchan" % self.proc.pid) as f:
                    return "nanosleep" in f.read()
            except OSError:
                return False
        state = wait_until(sleeping, timeout, what="events --follow to look")
        assert state != "exited", self.errors()

    def lines(self):
        self.out.seek(0)
        return self.out.read().splitlines()

    def errors(self):
        self.err.seek(0)
        return self.err.read()

    def stop(self):
        """SIGTERM; returns every line it printed (it must exit 0)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=10)
        assert self.proc.returncode == 0, self.errors()
        return self.lines()


def smtp_banner(port, host="127.0.0.1", timeout=10):
    """Connect to an SMTP server and return (code, text) of its greeting."""
    client = smtplib.SMTP(timeout=timeout)
    try:
        code, msg = client.connect(host, port)
        try:
            client.quit()
        except (smtplib.SMTPException, OSError):
            pass
        return code, msg.decode(errors="replace")
    finally:
        client.close()


def one_line(text):
    """The lines of text, without empty trailing ones."""
    return [line for line in text.splitlines() if line.strip()]


def smtp_submit(inst, sender, rcpts, body, mail_options=(), rcpt_options=()):
    """One message into inst over SMTP on loopback: MAIL and every RCPT
    must get 250; (code, text) of the reply to the end of DATA."""
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=30) as client:
        client.ehlo("client.test")
        code, text = client.mail(sender, list(mail_options))
        assert code == 250, text
        for r in rcpts:
            code, text = client.rcpt(r, list(rcpt_options))
            assert code == 250, (r, text)
        return client.data(body)


def smtp_queue(inst, sender, rcpts, body, mail_options=(), rcpt_options=()):
    """smtp_submit, and the message must be queued; its queue ID."""
    code, text = smtp_submit(inst, sender, rcpts, body, mail_options,
                             rcpt_options)
    assert code == 250, text
    return re.search(rb"queued as ([0-9A-Z]+)", text).group(1).decode()


# --- /proc ----------------------------------------------------------------

def proc_stat(pid):
    """(state, ppid) of pid, or None when it is gone."""
    try:
        data = Path("/proc/%d/stat" % pid).read_text()
    except OSError:
        return None
    rest = data[data.rindex(")") + 2:].split()
    return rest[0], int(rest[1])


def pid_alive(pid):
    """True when pid exists and is not a zombie."""
    st = proc_stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def proc_cmdline(pid):
    try:
        raw = Path("/proc/%d/cmdline" % pid).read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def proc_environ(pid):
    try:
        raw = Path("/proc/%d/environ" % pid).read_bytes()
    except OSError:
        return {}
    env = {}
    for item in raw.split(b"\0"):
        if b"=" in item:
            k, v = item.split(b"=", 1)
            env[k.decode(errors="replace")] = v.decode(errors="replace")
    return env


def proc_uids(pid):
    """(real, effective, saved, fs) uids of pid, or None when it is gone."""
    try:
        for line in Path("/proc/%d/status" % pid).read_text().splitlines():
            if line.startswith("Uid:"):
                return tuple(int(x) for x in line.split()[1:5])
    except OSError:
        return None
    return None


def proc_name(pid):
    """The program a process runs: basename of argv[0], else of its exe."""
    argv = proc_cmdline(pid)
    if argv:
        return os.path.basename(argv[0])
    try:
        return os.path.basename(os.readlink("/proc/%d/exe" % pid))
    except OSError:
        return ""


def all_pids():
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def child_pids(ppid):
    """{pid: program name} of the live children of ppid."""
    out = {}
    for pid in all_pids():
        st = proc_stat(pid)
        if st and st[1] == ppid and st[0] not in ("Z", "X"):
            out[pid] = proc_name(pid)
    return out


def descendants(ppid):
    """Every live process below ppid."""
    found, todo = set(), [ppid]
    parents = {}
    for pid in all_pids():
        st = proc_stat(pid)
        if st and st[0] not in ("Z", "X"):
            parents.setdefault(st[1], []).append(pid)
    while todo:
        for kid in parents.get(todo.pop(), []):
            if kid not in found:
                found.add(kid)
                todo.append(kid)
    return found


# --- orphans: adopted and reaped at once ----------------------------------

PR_SET_CHILD_SUBREAPER = 36
_OWN_CHILDREN = set()           # pids a subprocess.Popen of ours waits for
_OWN_LOCK = threading.Lock()


def _track_popen():
    """Record the pid of every child a Popen makes (under _OWN_LOCK, so the
    reaper never sees a fresh child before it is recorded), and forget it
    once its Popen has collected the exit status."""
    popen = subprocess.Popen
    if getattr(popen, "_sluice_tracked", False):
        return
    execute_child = popen._execute_child
    handle_exitstatus = popen._handle_exitstatus

    def _execute_child(self, *args, **kwargs):
        with _OWN_LOCK:
            execute_child(self, *args, **kwargs)
            _OWN_CHILDREN.add(self.pid)

    def _handle_exitstatus(self, *args, **kwargs):
        _OWN_CHILDREN.discard(self.pid)
        return handle_exitstatus(self, *args, **kwargs)

    popen._execute_child = _execute_child
    popen._handle_exitstatus = _handle_exitstatus
    popen._sluice_tracked = True


def _my_children():
    kids = set()
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return kids
    for tid in tasks:
        try:
            kids.update(int(p) for p in
                        Path("/proc/self/task/%s/children" % tid).read_text().split())
        except (OSError, ValueError):
            pass
    return kids


def _reap_orphans():
    """Reap every adopted child (not one of our Popens) that has ended."""
    while True:
        time.sleep(0.02)
        with _OWN_LOCK:
            for pid in _my_children() - _OWN_CHILDREN:
                st = proc_stat(pid)
                if st and st[0] == "Z":
                    try:
                        os.waitpid(pid, os.WNOHANG)
                    except ChildProcessError:
                        pass


def _become_subreaper():
    import ctypes
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            return
    except (OSError, AttributeError):
        return
    _track_popen()
    threading.Thread(target=_reap_orphans, name="sluice-reaper",
                     daemon=True).start()


def pytest_configure(config):
    # Every process that runs tests: the only one without xdist, each worker
    # under `pytest -n N` (pytest_configure runs in every worker; orphans go
    # to the nearest subreaper above them, the worker that started them).
    _become_subreaper()
    config.addinivalue_line(
        "markers", "serial: a test that measures rates or time windows, or is "
        "heavy enough to disturb one that does: make check runs these in a "
        "second pass, one at a time, after the parallel one (see SERIAL)")


# --- parallel runs (pytest-xdist) -----------------------------------------
#
# make check runs the system tests in two passes: `-n N --dist loadgroup -m
# "not serial"`, then `-m serial` in one process. Everything is parallel
# unless named here (or marked @pytest.mark.serial in its file): fixtures
# are parallel-safe (free_port() and the sinks' and DNS servers' ports are
# reserved machine-wide by tests/ports.py, instance folders come from
# mkdtemp, tmp_path is per worker, each worker is its own subreaper, the
# sanitizers' log files are named by pid).
#
# SERIAL: files (or file::test) whose assertions are about rates or time
# windows measured from outside, or that load the machine so that such a
# test running beside them could miss its window.
SERIAL = {
    "test_shaping.py",          # rates over windows, within 10% of the rate
    "test_shaping_redis.py",    # the same, shared through redis
    "test_group_commit.py",     # a group exists only if cleanup reads K ENDs at once
    "test_powerloss.py",        # a whole instance under strace -f, heavy
    "test_killstorm.py",        # a kill every 0.3 s, many clients: heavy
    "test_valgrind.py",         # every daemon under memcheck: heavy
    "test_reputation.py",       # pauses of 5 s and probes watched on time
    # observed gaps between restarts must grow 1.5x: a late look shrinks one
    "test_foundation.py::test_crashing_daemon_backs_off",
}
# GROUPS: tests that must share one worker (`--dist loadgroup`), by file.
GROUPS = {
    # `make install` in the build tree: one at a time, and the module's
    # staged install is made once, not once per worker
    "test_install.py": "make-tree",
}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Mark the tests SERIAL and GROUPS name (before -m deselects and before
    xdist reads the xdist_group marks)."""
    xdist = config.pluginmanager.hasplugin("xdist")
    for item in items:
        name = os.path.basename(str(item.fspath))
        func = getattr(item, "originalname", None) or item.name
        if name in SERIAL or "%s::%s" % (name, func) in SERIAL:
            item.add_marker(pytest.mark.serial)
        if xdist and name in GROUPS:
            item.add_marker(pytest.mark.xdist_group(GROUPS[name]))


# --- instances ------------------------------------------------------------

class Instance:
    """One `sluice init` folder and the commands to drive it."""

    def __init__(self, path, port, relayhost=None, user=None, sluice=None):
        self.sluice = Path(sluice) if sluice else SLUICE
        self.dir = Path(path)
        self.port = port
        self.relayhost = relayhost
        self.user = user            # run commands as this user (runuser)
        self._queue_dir = None

    # commands

    def _wrap(self, argv):
        if self.user:
            return ["runuser", "-u", self.user, "--"] + argv
        return argv

    def _env(self):
        env = dict(os.environ)
        env.pop("SLUICE_CONFIG", None)
        return env

    def command(self, *args, timeout=CMD_TIMEOUT):
        """Run `sluice -c DIR args...`; returns the CompletedProcess."""
        argv = self._wrap([str(self.sluice), "-c", str(self.dir)] + [str(a) for a in args])
        return subprocess.run(argv, capture_output=True, text=True,
                              timeout=timeout, env=self._env())

    def init(self):
        argv = [str(self.sluice), "init", str(self.dir), "--smtp-port", str(self.port)]
        if self.relayhost:
            argv += ["--relayhost", self.relayhost]
        r = subprocess.run(self._wrap(argv), capture_output=True, text=True,
                           timeout=CMD_TIMEOUT, env=self._env())
        assert r.returncode == 0, "sluice init failed: %s" % (r.stderr or r.stdout)
        return r

    def check(self, *args, timeout=CMD_TIMEOUT):
        """Run a sluice command that must succeed; returns its stdout."""
        r = self.command(*args, timeout=timeout)
        assert r.returncode == 0, "sluice %s: exit %d: %s" % (
            " ".join(map(str, args)), r.returncode, (r.stderr or r.stdout).strip())
        return r.stdout

    def start(self):
        self.check("start")

    def stop(self, timeout=CMD_TIMEOUT):
        return self.command("stop", timeout=timeout)

    # master's answer to SIGHUP, in maillog: the new configuration is in
    # effect (or was refused) once one of these is written.
    _RELOADED = re.compile(r"/master\[\d+\]: (reload -- version |warning: "
                           r"reload: .*; keeping the old )")

    def _reloads(self):
        """How many reloads master has answered in maillog, or None when
        master does not log there."""
        log = self.log()
        if not re.search(r"/master\[\d+\]: daemon started", log):
            return None
        return sum(1 for line in log.splitlines() if self._RELOADED.search(line))

    def reload(self, timeout=20.0):
        """`sluice reload`, which only signals master, then wait until
        master has read the configuration again (a service it starts
        from then on runs the new one)."""
        before = self._reloads()
        self.check("reload")
        if before is not None:
            wait_until(lambda: self._reloads() > before, timeout,
                       what="master to answer the reload in %s" % self.maillog)

    def status(self):
        return self.command("status").returncode

    # configuration

    def conf_set(self, **params):
        """Set main.cf parameters through `sluice conf name=value`."""
        self.check("conf", *("%s=%s" % kv for kv in params.items()))

    def conf_get(self, name):
        """The value `sluice conf name` shows."""
        out = self.check("conf", name)
        for line in out.splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip() == name:
                return value.strip()
        raise AssertionError("sluice conf %s printed no value: %r" % (name, out))

    @property
    def main_cf(self):
        return self.dir / "main.cf"

    @property
    def master_cf(self):
        return self.dir / "master.cf"

    def add_service(self, line):
        """Append one service line to master.cf."""
        text = self.master_cf.read_text()
        if not text.endswith("\n"):
            text += "\n"
        self.master_cf.write_text(text + line + "\n")

    def remove_service(self, name):
        """Drop the master.cf lines whose service name is name."""
        lines = self.master_cf.read_text().splitlines(keepends=True)
        keep = [l for l in lines if not (l.split() and l.split()[0] == name)]
        assert len(keep) < len(lines), "no service %s in master.cf" % name
        self.master_cf.write_text("".join(keep))

    @property
    def queue_dir(self):
        if self._queue_dir is None:
            try:
                self._queue_dir = Path(self.conf_get("queue_directory"))
            except AssertionError:
                self._queue_dir = self.dir / "queue"
        return self._queue_dir

    def queue_empty(self):
        """No file in incoming/, active/, deferred/ or hold/: nothing is in
        flight (wait for this before a stop when a test counts copies at
        a sink: a stop between the sink's 250 and qmgr's result sends the
        message again after the start)."""
        for sub in ("incoming", "active", "deferred", "hold"):
            for _, _, files in os.walk(self.queue_dir / sub):
                if files:
                    return False
        return True

    # logs

    @property
    def maillog(self):
        return self.dir / "log" / "maillog"

    def log(self):
        try:
            return self.maillog.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, n=LOG_TAIL_LINES):
        return "\n".join(self.log().splitlines()[-n:])

    def wait_log(self, pattern, timeout=30.0, count=1):
        """Wait until maillog has count lines matching regex pattern; returns
        the list of match objects."""
        rx = re.compile(pattern)

        def found():
            hits = [m for m in map(rx.search, self.log().splitlines()) if m]
            return hits if len(hits) >= count else None
        return wait_until(found, timeout, what="maillog line /%s/ x%d in %s"
                          % (pattern, count, self.maillog))

    # processes

    def master_pid(self):
        """The pid in pid/master.pid when that process lives, else None."""
        try:
            pid = int((self.queue_dir / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if pid_alive(pid) else None

    def children(self):
        """{pid: name} of master's live children ({} when master is down)."""
        pid = self.master_pid()
        return child_pids(pid) if pid else {}

    def child(self, name, timeout=30.0):
        """The pid of a child of master running program name (waits)."""
        def find():
            pids = [p for p, n in self.children().items() if n == name]
            return pids[0] if pids else None
        return wait_until(find, timeout, what="a %s process under master" % name)

    def pids(self):
        """Every live process of this instance, however found."""
        found = set()
        mpid = self.master_pid()
        if mpid:
            found.add(mpid)
            found |= descendants(mpid)
        dirs = {str(self.dir), str(self.dir.resolve())}
        me = os.getpid()
        for pid in all_pids():
            if pid == me or pid in found or not pid_alive(pid):
                continue
            if proc_environ(pid).get("SLUICE_CONFIG", "").rstrip("/") in dirs:
                found.add(pid)
                continue
            argv = proc_cmdline(pid)
            if any(a.rstrip("/") in dirs for a in argv) and \
                    os.path.basename(argv[0]) not in ("runuser", "pytest"):
                found.add(pid)
        return {p for p in found if pid_alive(p)}

    def kill_leftovers(self):
        """kill -9 whatever of the instance still runs; returns those pids."""
        left = self.pids()
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if left:
            wait_until(lambda: not any(pid_alive(p) for p in left), 10,
                       what="killed processes to go away")
        return left

    def shutdown(self):
        """Stop the instance whatever state it is in; returns a complaint
        (string) when stop left processes behind, else None."""
        complaint = None
        try:
            r = self.stop(timeout=30)
        except subprocess.TimeoutExpired:
            r = None
            complaint = "sluice stop timed out"
        left = self.kill_leftovers()
        if left and r is not None and r.returncode == 0:
            complaint = "sluice stop returned 0 but these still ran: %s" % sorted(left)
        return complaint


# --- fixtures -------------------------------------------------------------

def check_no_outside_dns(inst):
    """Fail unless inst makes no DNS query or asks only loopback servers."""
    if inst.conf_get("disable_dns_lookups") == "yes":
        return
    dns = inst.conf_get("dns_servers")
    servers = [s for s in re.split(r"[\s,]+", dns) if s]
    assert servers and all(s.startswith(("127.", "[::1]", "::1"))
                           for s in servers), \
        "instance would ask DNS servers %r (empty is the system's)" % dns


def _short_tmpdir():
    """A short folder for instances: unix socket paths must stay < 108
    bytes, which pytest's tmp_path does not promise. Open to other users
    (0755): the daemons of an instance that root makes run as nobody."""
    base = Path(tempfile.mkdtemp(prefix="sluice-", dir="/tmp"))
    os.chmod(base, 0o755)
    return base


def open_to_others(path):
    """Let other users search path and the folders above it up to /tmp
    (root's tests: the daemons of an instance that root makes run as
    nobody, and must reach the instance and the files a test names)."""
    path = Path(path)
    for folder in [path] + list(path.parents):
        if str(folder) in ("/", "/tmp"):
            break
        st = folder.stat()
        if st.st_uid == os.geteuid() and not st.st_mode & 0o001:
            os.chmod(folder, (st.st_mode & 0o7777) | 0o055)


@pytest.fixture(autouse=True)
def _tmp_path_open_to_others(request):
    """A test's tmp_path is open to other users (see open_to_others)."""
    if "tmp_path" in request.fixturenames and os.geteuid() == 0:
        open_to_others(request.getfixturevalue("tmp_path"))
    yield


@pytest.fixture
def make_instance(request):
    """Factory: make_instance(relayhost=None, start=False, params={},
    services=[]) -> Instance, created with `sluice init` on a free port.
    params are set in main.cf and services appended to master.cf before an
    optional start. Every instance is stopped after the test."""
    require(SLUICE, MASTER)
    made = []
    request.node._sluice_instances = made
    base = _short_tmpdir()

    def make(relayhost=None, start=False, params=None, services=(), user=None,
             path=None, sluice=None):
        path = Path(path) if path else base / ("i%d" % len(made))
        inst = Instance(path, free_port(), relayhost=relayhost, user=user,
                        sluice=sluice)
        made.append(inst)
        inst.init()
        if params:
            inst.conf_set(**params)
        check_no_outside_dns(inst)
        for line in services:
            inst.add_service(line)
        if start:
            inst.start()
        return inst

    yield make

    complaints = []
    for inst in made:
        c = inst.shutdown()
        if c:
            complaints.append("%s: %s" % (inst.dir, c))
    failed = any(getattr(request.node, "_sluice_rep_" + w, None) is not None and
                 getattr(request.node, "_sluice_rep_" + w).failed
                 for w in ("setup", "call"))
    if failed:
        print("instance folders kept for inspection under %s" % base)
    else:
        shutil.rmtree(base, ignore_errors=True)
    if complaints:
        pytest.fail("; ".join(complaints))


@pytest.fixture
def instance(make_instance):
    """An instance made by `sluice init`, not started."""
    return make_instance()


@pytest.fixture
def running(make_instance):
    """A started instance."""
    return make_instance(start=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Remember each phase's outcome and, for a failure, add the tail of
    every instance's maillog to the report."""
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "_sluice_rep_" + rep.when, rep)
    if rep.failed:
        for inst in getattr(item, "_sluice_instances", []):
            rep.sections.append(("maillog tail %s" % inst.maillog,
                                 inst.log_tail() or "(empty)"))


# --- peers: SMTP sinks and DNS servers, always stopped afterwards ----------

@pytest.fixture
def make_sink():
    """make_sink(**kw) -> a started sink.Sink (see tests/sink.py)."""
    import sink
    made = []

    def make(**kw):
        s = sink.Sink(**kw)
        made.append(s)
        return s
    yield make
    for s in made:
        s.stop()


@pytest.fixture
def make_dns():
    """make_dns(mx=..., a=..., rr=..., ptr=..., logfile=...) -> a started
    dns.DnsServer."""
    import dns
    made = []

    def make(**kw):
        d = dns.DnsServer(**kw)
        made.append(d)
        return d
    yield make
    for d in made:
        d.stop()


def traced_env(env=None):
    """The environment for a program run under strace: LeakSanitizer cannot
    work under ptrace (a SANITIZE=1 build would report a fatal error at
    exit), so leak checking is off there; every other check stays on."""
    env = dict(os.environ if env is None else env)
    opts = env.get("ASAN_OPTIONS", "")
    if opts:
        opts = ":".join(o for o in opts.split(":") if not o.startswith("detect_leaks="))
        env["ASAN_OPTIONS"] = (opts + ":" if opts else "") + "detect_leaks=0"
    return env
