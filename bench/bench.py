#!/usr/bin/python3
"""bench - `make bench`: sluice against Postfix, side by side, on one load

One run on this machine:
  1. installs Postfix's Debian package when it is missing (never as the
     system MTA: no configuration, no service started);
  2. measures the ceilings: the generator against smtp-sink with no MTA
     between (the protocol ceiling, and the generator's own CPU per
     message), and create+write+fsync+rename+directory fsync of
     BENCH_SIZE-byte files on the queue's filesystem (the durability
     ceiling for one file per message), with one and with BENCH_SESSIONS
     threads;
  3. runs a private Postfix instance and a sluice instance (`sluice init`)
     in a temporary folder, both relaying everything to one smtp-sink on
     loopback, both with their default durability (each fsyncs the queue
     file before its 250), and feeds them the same load from smtpgen.py,
     BENCH_ROUNDS rounds, the two MTAs alternating; prints the medians as
     one markdown table with a sluice/postfix ratio row;
  4. the queue under pressure: BENCH_PRESSURE_MESSAGES accepted from
     smtp-source (BENCH_PRESSURE_SESSIONS sessions) with qmgr paused (its
     master.cf line taken out in both MTAs), then the line put back and a
     reload: qmgr's peak memory while it drains, and the time to drain;
  5. one more round per MTA under `perf stat` counting tracepoints
     (raw_syscalls:sys_enter, sys_enter_fsync, sys_enter_fdatasync) on
     every process of the instance, children followed: the table's
     syscalls/msg and fsyncs/msg columns (BENCH_COUNT=0 skips it); with
     BENCH_PROFILE=1, one round per MTA under perf record -g and one
     under strace -c -w -f, summarised per daemon (bench/PROFILE.md);
  6. the cost of DKIM signing: the main load through sluice instances
     that sign every message (RSA-2048, then Ed25519), beside the main
     table's sluice, which signs nothing (BENCH_DKIM=0 skips it);
  7. the cost of the shaping scheduler: the main load through a sluice
     instance whose smtp_shaping_maps has a `default` rule that never
     binds (a rate and a connection limit far above the load), beside
     the main table's sluice, which has no rules (BENCH_SHAPING=0 skips
     it);
  7b. the event exporter: the main load through a sluice instance whose
     events daemon POSTs every journal event to a webhook (an http.server
     in this script that counts them): delivered msg/s beside the events/s
     exported while mail flows, and the events/s of a backlog drained (the
     webhook answers 503 during a round, then 200) (BENCH_EXPORTER=0
     skips it);
  7c. the HTTP API: BENCH_API_REQUESTS POST /v1/messages of 1 recipient
     and a tenth as many of 100 recipients (100 is api_spool_min_recipients:
     spooled for the render service) from BENCH_API_CLIENTS keep-alive
     clients: accepted requests/s and p50/p99 latency to the 202; then
     one templated batch of BENCH_API_BATCH recipients: the render
     service's recipients/s from the 202 until the spool is empty
     (BENCH_API=0 skips it);
  7d. the cost of TLS: the main load sent over STARTTLS (smtpgen.py
     --starttls) to a private Postfix and a sluice instance
     (smtpd_tls_security_level = may, a certificate made by the run),
     which relay it at smtp_tls_security_level = encrypt to a sink that
     speaks STARTTLS (bench/tls_sink.py, which refuses mail sent without
     it): delivered and accepted msg/s and CPU ms/msg beside the main
     table's plain-text figures (BENCH_TLS=0 skips it). Each MTA keeps its
     default connection reuse (Postfix does not reuse TLS connections
     unless smtp_tls_connection_reuse is set);
  7e. the cost of metrics and tracing: the main load through two sluice
     instances of the same settings, one with both off, one with
     metrics_listen on loopback (scraped every second by a thread here, as
     Prometheus would) and otel_exporter_otlp_endpoint pointing at a tiny
     OTLP/HTTP receiver here (POST /v1/traces answers 200; it counts the
     spans) with otel_traces_sampler_ratio = 1.0: delivered msg/s, cpu
     ms/msg (to the last delivery, and to 3 s without a new span so the
     export counts) and spans received per message (BENCH_OBS=0 skips it);
  8. appends one dated line to bench/results.md, then runs
     bench/map_bench.py when it exists (BENCH_MAPS=0 skips it).

Environment: BENCH_MESSAGES (2000) BENCH_SESSIONS (10) BENCH_SIZE (2048)
BENCH_ROUNDS (3) BENCH_PRESSURE (1 always, the default; 0 never; auto: only
when its estimated time keeps the whole run under BENCH_BUDGET seconds,
default 720) BENCH_PRESSURE_MESSAGES (100000) BENCH_PRESSURE_SESSIONS (50)
BENCH_COUNT (1) BENCH_PROFILE (0) BENCH_PROFILE_MESSAGES (1000) BENCH_PROFILE_DIR
BENCH_MAPS (1) BENCH_DKIM (1: the DKIM table; 0 skips it) BENCH_SHAPING (1: the
shaping table; 0 skips it) BENCH_EXPORTER (1: the exporter table; 0 skips it)
BENCH_API (1: the HTTP API table; 0 skips it) BENCH_API_REQUESTS (1000)
BENCH_API_CLIENTS (10) BENCH_API_BATCH (2000)
BENCH_TLS (1: the TLS table; 0 skips it) BENCH_OBS (1: the metrics and
tracing table; 0 skips it)
BENCH_MTAS (postfix,sluice) BENCH_KEEP=1 (keep the
temporary folder) SLUICE_TOP (the build tree whose bin/sluice and libexec/
run; default: the folder above this one) SLUICE_REVISION (its name in
results.md when it is not a git checkout) BENCH_RESULTS (the results file;
default bench/results.md, empty: do not record) BENCH_SLUICE_CONF (main.cf
settings for every sluice instance, "name=value name=value", e.g.
"events_enable=no" to measure the event journal's cost).

Measures: accepted msg/s = messages / time from the generator's first
connect to its last 250; delivered msg/s = messages / time from the same
start until smtp-sink has counted them all; p50/p99 accept ms = end of
DATA to 250, per message; cpu ms/msg = utime+stime of every process of the
instance (the master's tree, live ones plus reaped ones through cutime and
cstime) over the round, accept and delivery, divided by messages; peak RSS =
largest sum of VmHWM over the instance's processes, sampled 4 times a
second. Postfix needs root (its master runs as root, children as postfix).
"""

import http.client
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TOP = Path(os.environ.get("SLUICE_TOP", HERE.parent)).resolve()
PYTHON = "/usr/bin/python3"
SMTPGEN = HERE / "smtpgen.py"
POSTFIX = "/usr/sbin/postfix"
SMTP_SINK = "/usr/sbin/smtp-sink"
SMTP_SOURCE = "/usr/sbin/smtp-source"
TICK = os.sysconf("SC_CLK_TCK")
SENDER, RCPT = "from@bench.test", "to@bench.test"


def env_int(name, default):
    v = os.environ.get(name, "")
    try:
        return int(v) if v.strip() else default
    except ValueError:
        sys.exit("bench: %s=%r is not a number" % (name, v))


MESSAGES = env_int("BENCH_MESSAGES", 2000)
SESSIONS = env_int("BENCH_SESSIONS", 10)
SIZE = env_int("BENCH_SIZE", 2048)
ROUNDS = max(1, env_int("BENCH_ROUNDS", 3))
PRESSURE = os.environ.get("BENCH_PRESSURE", "1").strip() or "1"
PRESSURE_MESSAGES = env_int("BENCH_PRESSURE_MESSAGES", 100000)
PRESSURE_SESSIONS = env_int("BENCH_PRESSURE_SESSIONS", 50)
BUDGET = env_int("BENCH_BUDGET", 720)
MTAS = [m.strip() for m in os.environ.get("BENCH_MTAS", "postfix,sluice").split(",") if m.strip()]
KEEP = os.environ.get("BENCH_KEEP", "") not in ("", "0")
MAPS = os.environ.get("BENCH_MAPS", "1").strip() not in ("0",)
DKIM = os.environ.get("BENCH_DKIM", "1").strip() not in ("0",)
SHAPING = os.environ.get("BENCH_SHAPING", "1").strip() not in ("0",)
EXPORTER = os.environ.get("BENCH_EXPORTER", "1").strip() not in ("0",)
API = os.environ.get("BENCH_API", "1").strip() not in ("0",)
API_REQUESTS = env_int("BENCH_API_REQUESTS", 1000)
API_CLIENTS = env_int("BENCH_API_CLIENTS", 10)
API_BATCH = env_int("BENCH_API_BATCH", 2000)
TLS = os.environ.get("BENCH_TLS", "1").strip() not in ("0",)
OBS = os.environ.get("BENCH_OBS", "1").strip() not in ("0",)
OBS_QUIET = 3.0     # seconds without a new span that end an observability round
TLS_SINK = HERE / "tls_sink.py"
SLUICE_CONF = dict(kv.split("=", 1) for kv in
                   os.environ.get("BENCH_SLUICE_CONF", "").split() if "=" in kv)
PROFILE = os.environ.get("BENCH_PROFILE", "") not in ("", "0")
COUNT = os.environ.get("BENCH_COUNT", "1").strip() not in ("0",)
PROFILE_MESSAGES = env_int("BENCH_PROFILE_MESSAGES", 1000)
PROFILE_DIR = os.environ.get("BENCH_PROFILE_DIR", "") or \
    "/tmp/sluice-bench-profile-" + time.strftime("%Y%m%d-%H%M%S")
RESULTS = os.environ.get("BENCH_RESULTS", str(HERE / "results.md"))
STALL = 20.0        # seconds without progress before delivery counts as stuck


def say(*args):
    print(*args, flush=True)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=20.0):
    """True once something accepts TCP connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def run(argv, timeout=120, check=True, **kw):
    r = subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                       timeout=timeout, stdin=subprocess.DEVNULL, **kw)
    if check and r.returncode != 0:
        raise RuntimeError("%s: exit %d: %s" % (" ".join(map(str, argv)), r.returncode,
                                                (r.stderr or r.stdout).strip()[-500:]))
    return r


# --- Postfix package ------------------------------------------------------

def ensure_postfix():
    """Install Debian's postfix when missing, without making it the system
    MTA: 'No configuration' leaves /etc/postfix/main.cf absent, so nothing
    listens on port 25; a default instance the package may have started is
    stopped. Returns None when usable, else why not."""
    if all(os.access(p, os.X_OK) for p in (POSTFIX, SMTP_SINK, SMTP_SOURCE)):
        return None
    if os.geteuid() != 0:
        return "postfix is not installed and bench is not root"
    say("bench: installing postfix (no configuration, not the system MTA)")
    subprocess.run(["debconf-set-selections"], input="postfix postfix/main_mailer_type "
                   "select No configuration\n", text=True, check=False)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    r = subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "postfix"],
                       env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if r.returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        r = subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends",
                            "postfix"], env=env, stdin=subprocess.DEVNULL,
                           capture_output=True, text=True)
    if os.path.exists("/etc/postfix/main.cf"):
        subprocess.run([POSTFIX, "stop"], capture_output=True, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        return "apt-get install postfix failed: " + r.stderr.strip()[-300:]
    return None


# --- processes ------------------------------------------------------------

def read_stat(pid):
    """(ppid, own cpu ticks, reaped children's cpu ticks) or None."""
    try:
        data = Path("/proc/%d/stat" % pid).read_text()
    except OSError:
        return None
    f = data[data.rindex(")") + 2:].split()
    if f[0] in ("Z", "X"):
        return None
    return int(f[1]), int(f[11]) + int(f[12]), int(f[13]) + int(f[14])


def proc_status(pid, key):
    """A kB value of /proc/PID/status (VmHWM, VmRSS), 0 when gone."""
    try:
        for line in Path("/proc/%d/status" % pid).read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def proc_pss(pid):
    """Pss of pid in kB (/proc/PID/smaps_rollup), 0 when gone."""
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def proc_name(pid):
    try:
        raw = Path("/proc/%d/cmdline" % pid).read_bytes().split(b"\0")[0]
        return os.path.basename(raw.decode(errors="replace")) if raw else ""
    except OSError:
        return ""


def tree(root):
    """{pid: stat} of root and every live process below it."""
    stats = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            st = read_stat(int(p))
            if st:
                stats[int(p)] = st
    if root not in stats:
        return {}
    kids = {}
    for pid, st in stats.items():
        kids.setdefault(st[0], []).append(pid)
    out, todo = {}, [root]
    while todo:
        pid = todo.pop()
        out[pid] = stats[pid]
        todo.extend(k for k in kids.get(pid, []) if k not in out)
    return out


def tree_cpu(root):
    """Seconds of CPU used by root's tree so far, reaped children included."""
    return sum(own + reaped for _, own, reaped in tree(root).values()) / TICK


class Sampler:
    """Samples the memory of an instance's tree in a thread: peak of the
    sum of VmHWM (which counts shared pages once per process), peak of the
    sum of Pss (shared pages split among their users), and the peak VmHWM
    of processes named qmgr."""

    def __init__(self, mta, interval=0.25):
        self.mta, self.interval = mta, interval
        self.peak_kb, self.pss_kb, self.qmgr_kb = 0, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self):
        root = self.mta.master_pid()
        if not root:
            return
        total = pss = 0
        for pid in tree(root):
            hwm = proc_status(pid, "VmHWM")
            total += hwm
            pss += proc_pss(pid)
            if proc_name(pid) == "qmgr":
                self.qmgr_kb = max(self.qmgr_kb, hwm)
        self.peak_kb = max(self.peak_kb, total)
        self.pss_kb = max(self.pss_kb, pss)

    def _loop(self):
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sample()


def kill_tree(root):
    """SIGKILL whatever still runs under (and including) root."""
    for pid in tree(root) if root else {}:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


# --- the sink -------------------------------------------------------------

class Sink:
    """Postfix's smtp-sink on 127.0.0.1:port; counts what it receives by
    reading the running counter (-c: 'sess=N quit=N mesg=N' + CR) and
    remembers when each count was first reached."""

    def __init__(self, port, argv=None):
        """argv: another sink that prints the same count (tls_sink.py)."""
        self.port = port
        self.count = 0
        self.times = {}
        self.cond = threading.Condition()
        if argv is None:
            argv = [SMTP_SINK, "-c"]
            if os.geteuid() == 0:
                argv += ["-u", "nobody"]
            argv += ["127.0.0.1:%d" % port, "1000"]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        if not wait_port(port):
            self.stop()
            raise RuntimeError("smtp-sink did not listen on port %d" % port)

    def _read(self):
        buf = b""
        rx = re.compile(rb"mesg=(\d+)")
        while True:
            chunk = self.proc.stdout.read1(65536)
            if not chunk:
                return
            buf += chunk
            *parts, buf = re.split(rb"[\r\n]", buf)
            now = time.monotonic()
            for part in parts:
                m = rx.search(part)
                if m:
                    n = int(m.group(1))
                    with self.cond:
                        if n > self.count:
                            for k in range(self.count + 1, n + 1):
                                self.times.setdefault(k, now)
                            self.count = n
                            self.cond.notify_all()

    def wait_for(self, n, progress=None, stall=STALL):
        """The monotonic time the count first reached n, or None when neither
        it nor progress() (e.g. the MTA's queue length) changed for stall
        seconds."""
        last, last_change = (self.count, progress() if progress else None), time.monotonic()
        while True:
            with self.cond:
                if self.count >= n:
                    return self.times[n]
                self.cond.wait(0.5)
                if self.count >= n:
                    return self.times[n]
            if self.count != last[0]:
                # The sink moves: no need to walk a deep queue to know it.
                last, last_change = (self.count, last[1]), time.monotonic()
                continue
            if time.monotonic() - last_change < 2.0:
                continue
            now_state = (self.count, progress() if progress else None)
            if now_state != last:
                last, last_change = now_state, time.monotonic()
            elif time.monotonic() - last_change > stall:
                return None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# --- the generator --------------------------------------------------------

def generate(port, messages, sessions=SESSIONS, size=SIZE, starttls=False):
    """Run smtpgen.py against 127.0.0.1:port (over STARTTLS when
    starttls); its JSON result plus 'start' (monotonic time just before
    it ran)."""
    argv = [PYTHON, str(SMTPGEN), "-s", str(sessions), "-m", str(messages),
            "-l", str(size), "-f", SENDER, "-t", RCPT]
    argv += ["--starttls"] if starttls else []
    argv += ["127.0.0.1:%d" % port]
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)
    out, err = proc.communicate()
    try:
        res = json.loads(out.decode())
    except ValueError:
        raise RuntimeError("smtpgen failed: %s" % err.decode(errors="replace")[-500:])
    res["start"] = start
    return res


def generate_timed(port, messages, **kw):
    """generate() with its CPU taken from RUSAGE_CHILDREN around it."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    res = generate(port, messages, **kw)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    res["cpu"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return res


# --- ceilings -------------------------------------------------------------

def fsync_ceiling(folder, threads, seconds=2.0):
    """Files/s of create + write SIZE bytes + fsync + close + rename +
    fsync of the directory, in folder, with threads writers at once."""
    tmp, done = Path(folder) / "tmp", Path(folder) / "done"
    tmp.mkdir(parents=True, exist_ok=True)
    done.mkdir(parents=True, exist_ok=True)
    data = b"x" * SIZE
    counts = [0] * threads
    stop_at = time.monotonic() + seconds

    def writer(k):
        dfd = os.open(str(done), os.O_RDONLY | os.O_DIRECTORY)
        n = 0
        try:
            while time.monotonic() < stop_at:
                name = "%d.%d" % (k, n)
                fd = os.open(str(tmp / name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                os.write(fd, data)
                os.fsync(fd)
                os.close(fd)
                os.rename(str(tmp / name), str(done / name))
                os.fsync(dfd)
                n += 1
        finally:
            os.close(dfd)
        counts[k] = n

    start = time.monotonic()
    ts = [threading.Thread(target=writer, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    elapsed = time.monotonic() - start
    shutil.rmtree(str(folder), ignore_errors=True)
    return sum(counts) / elapsed


def source_load(port, messages, sessions):
    """Postfix's smtp-source -d: sessions connections, each sending
    messages back to back, messages in all. Cheaper per message than
    smtpgen (C, no latency bookkeeping), so it feeds the pressure table.
    Returns {elapsed, rc, err, cpu}: cpu is smtp-source's own seconds."""
    argv = [SMTP_SOURCE, "-d", "-s", sessions, "-m", messages, "-l", SIZE, "-f", SENDER,
            "-t", RCPT, "-M", "gen.bench.test", "127.0.0.1:%d" % port]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    r = run(argv, timeout=3600, check=False)
    elapsed = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"elapsed": elapsed, "rc": r.returncode, "err": (r.stderr or "").strip()[-300:],
            "start": start,
            "cpu": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)}


def source_ceiling(port, messages):
    """msg/s of Postfix's smtp-source (connections reused, -d) into the sink."""
    start = time.monotonic()
    run([SMTP_SOURCE, "-d", "-s", SESSIONS, "-m", messages, "-l", SIZE, "-f", SENDER,
         "-t", RCPT, "127.0.0.1:%d" % port], timeout=600)
    return messages / (time.monotonic() - start)


# --- the MTAs -------------------------------------------------------------

def count_files(folder):
    n = 0
    for _, _, files in os.walk(str(folder)):
        n += len(files)
    return n


class Postfix:
    """A private Postfix instance: DIR/etc (main.cf, master.cf), DIR/queue,
    DIR/data, DIR/maillog; smtpd on 127.0.0.1:port, everything relayed to
    [127.0.0.1]:sink_port, no local delivery, no DNS, default durability."""

    name = "postfix"

    def __init__(self, folder, port, sink_port, extra=None):
        self.dir = Path(folder)
        self.port, self.sink_port = port, sink_port
        self.etc, self.queue = self.dir / "etc", self.dir / "queue"
        self.data, self.maillog = self.dir / "data", self.dir / "maillog"
        for d in (self.etc, self.queue, self.data):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(str(self.dir), 0o755)
        shutil.chown(str(self.data), "postfix")
        params = {
            "compatibility_level": "3.6",
            "config_directory": self.etc,
            "queue_directory": self.queue,
            "data_directory": self.data,
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": "postfix.bench.test",
            "mydomain": "bench.test",
            "mydestination": "",
            "local_transport": "error:local delivery is disabled",
            "alias_maps": "",
            "alias_database": "",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "smtpd_relay_restrictions": "permit_mynetworks, reject",
            "relayhost": "[127.0.0.1]:%d" % sink_port,
            "disable_dns_lookups": "yes",
            "smtp_dns_support_level": "disabled",
            "smtp_host_lookup": "native",
            "biff": "no",
            "maillog_file": self.maillog,
            "maillog_file_prefixes": self.dir,
        }
        params.update(extra or {})
        (self.etc / "main.cf").write_text(
            "".join("%s = %s\n" % kv for kv in params.items()))
        lines = []
        for line in Path("/etc/postfix/master.cf").read_text().splitlines():
            f = line.split()
            if line[:1] not in ("#", " ", "\t", "") and len(f) >= 8:
                if f[0] == "smtp" and f[1] == "inet":
                    f[0] = "127.0.0.1:%d" % port
                f[4] = "n"          # no chroot: it would need /etc copied in
                line = " ".join(f)
            lines.append(line)
        self.master_cf_text = "\n".join(lines) + "\n"
        (self.etc / "master.cf").write_text(self.master_cf_text)
        run([POSTFIX, "-c", self.etc, "check"])

    def _postfix(self, *args, check=True):
        return run([POSTFIX, "-c", self.etc] + list(args), check=check)

    def start(self):
        self._postfix("start")
        if not wait_port(self.port):
            raise RuntimeError("postfix did not listen on %d; maillog:\n%s"
                               % (self.port, self.log_tail()))

    def stop(self):
        root = self.master_pid()
        self._postfix("stop", check=False)
        deadline = time.monotonic() + 15
        while root and read_stat(root) and time.monotonic() < deadline:
            time.sleep(0.1)
        kill_tree(root)

    def master_pid(self):
        try:
            pid = int((self.queue / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if read_stat(pid) else None

    def queued(self):
        return sum(count_files(self.queue / d) for d in
                   ("maildrop", "incoming", "active", "deferred", "hold"))

    def pause_qmgr(self):
        """Take qmgr out of master.cf (applied at start or reload)."""
        text = "".join(l + "\n" for l in self.master_cf_text.splitlines()
                       if not (l.split() and l.split()[0] == "qmgr"))
        (self.etc / "master.cf").write_text(text)

    def resume_qmgr(self):
        (self.etc / "master.cf").write_text(self.master_cf_text)
        self._postfix("reload")

    def log_tail(self, n=15):
        try:
            return "\n".join(self.maillog.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


class Sluice:
    """A `sluice init` instance relaying everything to [127.0.0.1]:sink_port."""

    name = "sluice"

    def __init__(self, folder, port, sink_port, extra=None):
        self.sluice = TOP / "bin" / "sluice"
        self.dir = Path(folder)
        self.port, self.sink_port = port, sink_port
        run([self.sluice, "init", self.dir, "--smtp-port", port,
             "--relayhost", "[127.0.0.1]:%d" % sink_port])
        extra = dict(SLUICE_CONF, **(extra or {}))
        if extra:
            self._sluice("conf", *("%s=%s" % kv for kv in extra.items()))
        self.queue = Path(self._conf("queue_directory") or self.dir / "queue")
        self.maillog = self.dir / "log" / "maillog"
        self.master_cf = self.dir / "master.cf"
        self.master_cf_text = self.master_cf.read_text()

    def _sluice(self, *args, check=True, timeout=120):
        env = dict(os.environ)
        env.pop("SLUICE_CONFIG", None)
        return run([self.sluice, "-c", self.dir] + list(args), check=check,
                   timeout=timeout, env=env)

    def _conf(self, name):
        r = self._sluice("conf", name, check=False)
        for line in r.stdout.splitlines():
            k, sep, v = line.partition("=")
            if sep and k.strip() == name:
                return v.strip()
        return None

    def start(self):
        self._sluice("start")
        if not wait_port(self.port):
            raise RuntimeError("sluice did not listen on %d; maillog:\n%s"
                               % (self.port, self.log_tail()))

    def stop(self):
        root = self.master_pid()
        try:
            self._sluice("stop", check=False, timeout=30)
        except subprocess.TimeoutExpired:
            pass
        kill_tree(root)

    def master_pid(self):
        try:
            pid = int((self.queue / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if read_stat(pid) else None

    def queued(self):
        return sum(count_files(self.queue / d) for d in
                   ("maildrop", "incoming", "active", "deferred", "hold"))

    def pause_qmgr(self):
        text = "".join(l + "\n" for l in self.master_cf_text.splitlines()
                       if not (l.split() and l.split()[0] == "qmgr"))
        self.master_cf.write_text(text)

    def resume_qmgr(self):
        """Put qmgr back and reload; when no qmgr shows up within 10 s
        (a master that does not add services on reload), restart."""
        self.master_cf.write_text(self.master_cf_text)
        self._sluice("reload", check=False)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            root = self.master_pid()
            if root and any(proc_name(p) == "qmgr" for p in tree(root)):
                return
            time.sleep(0.1)
        self.stop()
        self.start()

    def log_tail(self, n=15):
        try:
            return "\n".join(self.maillog.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


# --- one measurement ------------------------------------------------------

def wait_empty(mta, stall=STALL):
    """Wait until mta's queue is empty; False when it stops shrinking."""
    last, since = mta.queued(), time.monotonic()
    while last:
        time.sleep(0.1)
        n = mta.queued()
        if n != last:
            last, since = n, time.monotonic()
        elif time.monotonic() - since > stall:
            return False
    return True


def measure(mta, sink, messages, delivers, starttls=False):
    """One round: the generator sends messages to mta (over STARTTLS
    when starttls); returns a dict of the figures (delivered None when
    the sink did not get them all)."""
    if delivers:
        wait_empty(mta)
    root = mta.master_pid()
    if not root:
        raise RuntimeError("%s is not running; maillog:\n%s" % (mta.name, mta.log_tail()))
    cpu0 = tree_cpu(root)
    base = sink.count
    with Sampler(mta) as mem:
        g = generate_timed(mta.port, messages, starttls=starttls)
        done_at = None
        if delivers and g["messages"]:
            done_at = sink.wait_for(base + g["messages"], progress=mta.queued)
        else:
            time.sleep(1.0)         # let cleanup/qmgr settle before the CPU count
    cpu1 = tree_cpu(mta.master_pid() or root)
    n = g["messages"]
    return {
        "messages": n,
        "accepted": n / g["elapsed"] if g["elapsed"] else 0.0,
        "delivered": n / (done_at - g["start"]) if done_at else None,
        "p50": g["p50"], "p99": g["p99"],
        "cpu": (cpu1 - cpu0) * 1000.0 / n if n else None,
        "rss": mem.peak_kb / 1024.0,
        "pss": mem.pss_kb / 1024.0,
        "env_p50": g["env_p50"],
        "errors": g["errors"], "last_error": g["last_error"],
        "gen_cpu": g["cpu"] * 1000.0 / n if n else None,
    }


def median(values):
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def fmt(v, digits=1):
    if v is None:
        return "n/a"
    return "%.*f" % (digits, v)


def unit(v, u):
    return "n/a" if v is None else fmt(v) + u


# --- profiles (BENCH_PROFILE=1) -------------------------------------------

PERF = "/usr/bin/perf"
STRACE = "/usr/bin/strace"
DAEMONS = ("master", "smtpd", "cleanup", "qmgr", "smtp", "trivial-rewrite", "anvil",
           "pickup", "bounce", "tlsmgr", "scache", "proxymap", "showq", "postlogd")


def stop_tool(proc, timeout=60):
    """SIGINT a perf or strace we started (both then write their summary
    and detach), and wait for it."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def profile_round(mta, sink, messages, delivers):
    """One round with the instance's processes sampled by perf: [pids]
    seen during it (with their names), and the round's figures."""
    pids = {}

    def seen():
        root = mta.master_pid()
        for pid in tree(root) if root else {}:
            pids.setdefault(pid, proc_name(pid))
    seen()
    stop = threading.Event()

    def loop():
        while not stop.wait(0.1):
            seen()
    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        res = measure(mta, sink, messages, delivers)
    finally:
        stop.set()
        t.join()
    return pids, res


COUNT_EVENTS = ("raw_syscalls:sys_enter", "syscalls:sys_enter_fsync",
                "syscalls:sys_enter_fdatasync", "context-switches")


def count_round(mta, sink, messages, delivers):
    """One round with `perf stat` counting the system calls and fsyncs of
    every process of the instance (those forked during the round
    included: perf's counters are inherited). Counting a tracepoint costs
    little, but the round's rates are not used. Returns {"syscalls":
    per message, "fsyncs": fsync + fdatasync per message}, or None with
    the reason printed."""
    if not os.access(PERF, os.X_OK):
        say("- syscall count skipped for %s: %s not found" % (mta.name, PERF))
        return None
    if delivers:
        wait_empty(mta)
    root = mta.master_pid()
    pids = sorted(tree(root)) if root else []
    if not pids:
        return None
    argv = [PERF, "stat", "-x", ",", "--no-big-num"]
    for ev in COUNT_EVENTS:
        argv += ["-e", ev]
    argv += ["-p", ",".join(str(p) for p in pids)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    time.sleep(0.5)         # perf attached
    try:
        res = measure(mta, sink, messages, delivers)
    finally:
        stop_tool(proc)
    counts = {}
    for line in proc.stderr.read().splitlines():
        f = line.split(",")
        if len(f) >= 3 and f[2] in COUNT_EVENTS:
            try:
                counts[f[2]] = int(f[0])
            except ValueError:
                pass
    n = res["messages"]
    if len(counts) != len(COUNT_EVENTS) or not n:
        say("- syscall count failed for %s: %s" % (mta.name, counts))
        return None
    return {"syscalls": counts["raw_syscalls:sys_enter"] / n,
            "fsyncs": (counts["syscalls:sys_enter_fsync"] +
                       counts["syscalls:sys_enter_fdatasync"]) / n,
            "switches": counts["context-switches"] / n}


def parse_strace_c(path):
    """{syscall: (calls, errors, seconds)} from one `strace -c` output."""
    out = {}
    try:
        text = Path(path).read_text()
    except OSError:
        return out
    for line in text.splitlines():
        f = line.split()
        if len(f) < 5 or not re.match(r"^[0-9.]+$", f[0]) or f[-1] == "total":
            continue
        try:
            secs, calls = float(f[1]), int(f[3])
            errors = int(f[4]) if len(f) == 6 else 0
        except ValueError:
            continue
        out[f[-1]] = (calls, errors, secs)
    return out


def perf_lines(data, *args):
    """Rows of `perf report --stdio` as lists of fields (comments dropped)."""
    r = run([PERF, "report", "-i", data, "--stdio", "-g", "none"] + list(args),
            check=False, timeout=600)
    return r.stdout, [l.split() for l in r.stdout.splitlines()
                      if l.strip() and not l.lstrip().startswith("#")]


def pct(field):
    try:
        return float(field.rstrip("%"))
    except ValueError:
        return None


def perf_summary(data, folder, kind, res):
    """Print, per process name, its share of the CPU samples, how much of
    it is in the kernel, the system calls that cost it most (children
    time under __x64_sys_*), and its top user-space functions."""
    cpu = res["cpu"] or 0.0
    ms = lambda share: fmt(share / 100.0 * cpu, 3)
    text, rows = perf_lines(data, "--no-children", "--sort", "comm,dso")
    (folder / ("perf.%s.dso.txt" % kind)).write_text(text)
    share, kernel = {}, {}
    for f in rows:
        if len(f) >= 3 and pct(f[0]) is not None:
            share[f[1]] = share.get(f[1], 0.0) + pct(f[0])
            if f[2] == "[kernel.kallsyms]":
                kernel[f[1]] = kernel.get(f[1], 0.0) + pct(f[0])
    text, rows = perf_lines(data, "--children", "--sort", "comm,sym")
    (folder / ("perf.%s.children.txt" % kind)).write_text(text)
    calls = {}
    for f in rows:
        if len(f) >= 5 and f[4].startswith("__x64_sys_") and pct(f[0]):
            calls.setdefault(f[2], []).append((pct(f[0]), f[4][len("__x64_sys_"):]))
    text, rows = perf_lines(data, "--no-children", "--sort", "comm,dso,sym",
                            "--percent-limit", "0.2")
    (folder / ("perf.%s.sym.txt" % kind)).write_text(text)
    user = {}
    for f in rows:
        if len(f) >= 5 and f[2] != "[kernel.kallsyms]" and pct(f[0]):
            user.setdefault(f[1], []).append((pct(f[0]), "%s (%s)" % (f[-1], f[2])))
    say("perf: %% of the instance's CPU samples (cpu-clock) and, from the round's "
        "%s ms/msg of CPU, ms per message\n" % fmt(cpu, 3))
    say("| process | cpu % (ms/msg) | in kernel % | costliest system calls, % incl. "
        "children | top user-space functions, self % |")
    say("|---|---|---|---|---|")
    for name, sh in sorted(share.items(), key=lambda kv: -kv[1]):
        if sh < 0.5:
            continue
        say("| %s | %s (%s) | %s | %s | %s |" % (
            name, fmt(sh), ms(sh), fmt(kernel.get(name, 0.0)),
            ", ".join("%s %s" % (c, fmt(p)) for p, c in sorted(calls.get(name, []),
                                                              reverse=True)[:5]),
            ", ".join("%s %s" % (u, fmt(p, 2)) for p, u in sorted(user.get(name, []),
                                                                 reverse=True)[:4])))
    say("")
    say("top symbols, self time (kernel [k] and user [.]):\n")
    say("```")
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            if pct(line.split()[0]) is not None and pct(line.split()[0]) >= 1.0:
                say(line.rstrip())
    say("```\n")


def daemon_of(name):
    return name if name in DAEMONS else (name or "?")


def profile(mta, sink, messages, delivers, folder):
    """BENCH_PROFILE=1: one round under `perf record -g` (every process of
    the instance, children forked during the round included), then one
    under `strace -c -w -f` (each process traced on its own, so the
    summary is per daemon; -w: wall time in the call, which for fsync is
    the wait for the disk). Prints the summaries; raw files stay in folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    kind = mta.name
    say("### %s: perf record -g, one round of %d messages\n" % (kind, messages))
    root = mta.master_pid()
    if delivers:
        wait_empty(mta)
    data = folder / ("perf.%s.data" % kind)
    pids = ",".join(str(p) for p in tree(root))
    perf = subprocess.Popen([PERF, "record", "-q", "-e", "cpu-clock", "-F", "2000", "-g",
                             "-p", pids, "-o", str(data)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)
    try:
        seen, res = profile_round(mta, sink, messages, delivers)
    finally:
        stop_tool(perf)
    err = perf.stderr.read().decode(errors="replace").strip()
    if perf.returncode not in (0, -signal.SIGINT, 130) or not data.exists():
        say("perf failed (exit %s): %s\n" % (perf.returncode, err[-300:]))
    else:
        perf_summary(data, folder, kind, res)
    say("round under perf: %s msg/s accepted, %s delivered, cpu %s ms/msg; %d processes "
        "seen (%s)\n" % (fmt(res["accepted"]), fmt(res["delivered"]), fmt(res["cpu"], 3),
                         len(seen), ", ".join("%s %d" % (n, c) for n, c in sorted(
                             count_names(seen.values()).items()))))

    say("### %s: strace -c -w -f, one round of %d messages\n" % (kind, messages))
    if delivers:
        wait_empty(mta)
    procs = []
    for pid in tree(mta.master_pid()):
        name = daemon_of(proc_name(pid))
        out = folder / ("strace.%s.%s.%d" % (kind, name, pid))
        procs.append((name, out, subprocess.Popen(
            [STRACE, "-c", "-w", "-f", "-q", "-o", str(out), "-p", str(pid)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
    time.sleep(1.5)
    try:
        seen, res = profile_round(mta, sink, messages, delivers)
    finally:
        for _, _, proc in procs:
            stop_tool(proc)
    n = max(1, messages)
    per = {}
    for name, out, _ in procs:
        agg = per.setdefault(name, {})
        for sc, (calls, errors, secs) in parse_strace_c(out).items():
            c0, e0, s0 = agg.get(sc, (0, 0, 0.0))
            agg[sc] = (c0 + calls, e0 + errors, s0 + secs)
    total_calls = sum(c for agg in per.values() for c, _, _ in agg.values())
    say("%s syscalls per message in all (%d processes at the start, %d seen; master's "
        "line counts the children it forked during the round); round under strace: %s "
        "msg/s accepted, %s delivered\n" % (fmt(total_calls / n), len(procs), len(seen),
                                            fmt(res["accepted"]), fmt(res["delivered"])))
    say("| process | processes | syscalls/msg | fsync calls/msg (wall ms/msg) | most "
        "frequent: calls/msg (wall ms/msg; waits such as epoll_wait, poll, flock are "
        "idle time) |")
    say("|---|---|---|---|---|")
    nproc = count_names(name for name, _, _ in procs)
    for name, agg in sorted(per.items(), key=lambda kv: -sum(c for c, _, _ in kv[1].values())):
        calls = sum(c for c, _, _ in agg.values())
        if not calls:
            continue
        top = sorted(agg.items(), key=lambda kv: -kv[1][0])[:7]
        fc = sum(agg.get(sc, (0, 0, 0.0))[0] for sc in ("fsync", "fdatasync"))
        fw = sum(agg.get(sc, (0, 0, 0.0))[2] for sc in ("fsync", "fdatasync"))
        say("| %s | %d | %s | %s (%s) | %s |" % (
            name, nproc.get(name, 0), fmt(calls / n), fmt(fc / n, 2),
            fmt(fw * 1000.0 / n, 3), ", ".join(
                "%s %s (%s)" % (sc, fmt(c / n, 2), fmt(sec * 1000.0 / n, 3))
                for sc, (c, _, sec) in top)))
    fs = {sc: sum(agg.get(sc, (0, 0, 0.0))[2] for agg in per.values())
          for sc in ("fsync", "fdatasync", "sync_file_range")}
    say("\nwall time inside fsync/fdatasync, all processes: %s ms/msg (summed over "
        "processes, so parallel waits add up); the MTA's cpu: %s ms/msg\n"
        % (fmt((fs["fsync"] + fs["fdatasync"]) * 1000.0 / n, 3), fmt(res["cpu"], 3)))
    say("raw files: %s\n" % folder)


def count_names(names):
    out = {}
    for nm in names:
        nm = daemon_of(nm)
        out[nm] = out.get(nm, 0) + 1
    return out


# --- the run --------------------------------------------------------------

class Bench:
    def __init__(self):
        self.base = Path(tempfile.mkdtemp(prefix="sluice-bench-", dir="/tmp"))
        os.chmod(self.base, 0o755)  # the daemons run as nobody under root
        os.chmod(str(self.base), 0o755)
        self.started = time.monotonic()
        self.sink = None
        self.mtas = {}
        self.notes = []
        self.why_not = {}

    def make(self, kind, tag, extra=None):
        folder = self.base / ("%s-%s" % (kind, tag))
        port = free_port()
        cls = Postfix if kind == "postfix" else Sluice
        return cls(folder, port, self.sink.port, extra)

    def usable(self):
        """Which MTAs can run here; fills self.why_not for the others."""
        out = []
        for m in MTAS:
            if m == "postfix":
                why = ensure_postfix() or (None if os.geteuid() == 0 else
                                           "a private Postfix instance needs root")
            elif m == "sluice":
                missing = [str(p) for p in (TOP / "bin" / "sluice", TOP / "libexec" / "master")
                           if not os.access(str(p), os.X_OK)]
                why = "not built: " + ", ".join(missing) if missing else None
            else:
                why = "unknown MTA"
            if why:
                self.why_not[m] = why
            else:
                out.append(m)
        return out

    def ceilings(self):
        say("## ceilings\n")
        f1 = fsync_ceiling(self.base / "fsync1", 1)
        fn = fsync_ceiling(self.base / "fsyncN", SESSIONS)
        g = generate_timed(self.sink.port, MESSAGES)
        src = source_ceiling(self.sink.port, MESSAGES)
        self.ceil = {"fsync1": f1, "fsyncN": fn, "gen": g["rate"], "gen_p50": g["p50"], "gen_p99": g["p99"],
                     "gen_cpu": g["cpu"] * 1000.0 / max(1, g["messages"]), "source": src}
        say("| ceiling | figure |")
        say("|---|---|")
        say("| smtpgen -> smtp-sink, no MTA (%d sessions) | %s msg/s, p50 %s ms, p99 %s ms |"
            % (SESSIONS, fmt(self.ceil["gen"], 0), fmt(g["p50"], 2), fmt(g["p99"], 2)))
        say("| smtpgen's own CPU | %s ms/msg |" % fmt(self.ceil["gen_cpu"], 3))
        say("| smtp-source -d -> smtp-sink, no MTA | %s msg/s |" % fmt(src, 0))
        say("| create+write+fsync+rename+dir fsync, %d B files on %s, 1 writer | %s files/s |"
            % (SIZE, self.base, fmt(f1, 0)))
        say("| the same, %d writers at once | %s files/s |" % (SESSIONS, fmt(fn, 0)))
        say("")

    def main_table(self, names):
        for kind in names:
            mta = self.make(kind, "main")
            mta.start()
            self.mtas[kind] = mta
        # Warm-up: a few messages each; tells whether the MTA delivers at all.
        delivers = {}
        for kind, mta in self.mtas.items():
            base = self.sink.count
            g = generate(mta.port, 20)
            delivers[kind] = bool(g["messages"]) and \
                sink_wait(self.sink, base + g["messages"], mta) is not None
            if not g["messages"]:
                raise RuntimeError("%s accepted nothing: %s" % (kind, g["last_error"]))
            if not delivers[kind]:
                self.notes.append("%s did not deliver the warm-up messages to the sink "
                                  "within %.0f s: delivered msg/s is n/a, and its cpu "
                                  "ms/msg counts accepting only" % (kind, STALL))
        rows = {k: [] for k in self.mtas}
        order = list(self.mtas)
        for r in range(ROUNDS):
            for kind in (order if r % 2 == 0 else order[::-1]):
                res = measure(self.mtas[kind], self.sink, MESSAGES, delivers[kind])
                rows[kind].append(res)
                say("round %d %-7s accepted %7s msg/s  delivered %7s msg/s  p50 %s ms  "
                    "p99 %s ms  cpu %s ms/msg  rss %s MiB (pss %s)  envelope p50 %s ms%s" % (
                        r + 1, kind, fmt(res["accepted"]), fmt(res["delivered"]),
                        fmt(res["p50"], 2), fmt(res["p99"], 2), fmt(res["cpu"], 3),
                        fmt(res["rss"]), fmt(res["pss"]), fmt(res["env_p50"], 2), "  errors %d (%s)" % (res["errors"], res["last_error"])
                        if res["errors"] else ""))
        self.med = {}
        for kind in MTAS:
            if kind in rows:
                self.med[kind] = {k: median([x[k] for x in rows[kind]]) for k in
                                  ("accepted", "delivered", "p50", "p99", "cpu", "rss",
                                   "pss", "env_p50", "gen_cpu")}
                self.med[kind]["syscalls"] = self.med[kind]["fsyncs"] = None
        if COUNT:
            for kind, mta in self.mtas.items():
                c = count_round(mta, self.sink, MESSAGES, delivers[kind])
                if c:
                    self.med[kind].update(c)
        say("\n## %d messages of %d bytes, %d sessions, median of %d rounds\n"
            % (MESSAGES, SIZE, SESSIONS, ROUNDS))
        say("both MTAs fsync each message before 250\n")
        cols = ("accepted", "delivered", "p50", "p99", "cpu", "syscalls", "fsyncs", "rss")
        digits = (1, 1, 2, 2, 3, 1, 2, 1)
        say("| mta | accepted msg/s | delivered msg/s | p50 accept ms | p99 accept ms "
            "| cpu ms/msg | syscalls/msg | fsyncs/msg | peak RSS MiB |")
        say("|---|---|---|---|---|---|---|---|---|")
        for kind in MTAS:
            m = self.med.get(kind)
            if m is None:
                say("| %s |%s" % (kind, " n/a |" * len(cols)))
                continue
            say("| %s | %s |" % (kind, " | ".join(fmt(m[k], d) for k, d in zip(cols, digits))))
        s, p = self.med.get("sluice"), self.med.get("postfix")
        self.ratio = {}
        if s and p:
            for k in cols:
                self.ratio[k] = s[k] / p[k] if s[k] is not None and p[k] else None
            say("| sluice/postfix | %s |" % " | ".join(fmt(self.ratio[k], 2) for k in cols))
        say("")
        say("- durability ceilings in this run (create+write+fsync+rename+dir fsync, "
            "one file per message): %s files/s with 1 writer, %s with %d writers%s"
            % (fmt(self.ceil["fsync1"], 0), fmt(self.ceil["fsyncN"], 0), SESSIONS,
               "; sluice delivered %s %% of the %d-writer ceiling" % (
                   fmt(100.0 * s["delivered"] / self.ceil["fsyncN"], 0), SESSIONS)
               if s and s["delivered"] and self.ceil["fsyncN"] else ""))
        if COUNT:
            say("- syscalls/msg and fsyncs/msg: one extra round per MTA under `perf stat` "
                "(tracepoint counts over every process of the instance, children "
                "followed), not one of the rounds above; context switches per message "
                "in that round: %s" % " / ".join(
                    "%s %s" % (k, fmt(m.get("switches"), 1)) for k, m in self.med.items()))
        for kind, why in self.why_not.items():
            say("- %s: n/a, %s" % (kind, why))
        for note in self.notes:
            say("- " + note)
        say("- peak RSS is the sum of VmHWM over the instance's processes, as asked; "
            "the sum of Pss (shared pages divided among processes) peaked at %s MiB"
            % " / ".join("%s %s" % (k, fmt(m["pss"])) for k, m in self.med.items()))
        say("- envelope p50 (MAIL+RCPT+DATA written at once, to the 354): %s ms"
            % " / ".join("%s %s" % (k, fmt(m["env_p50"], 2)) for k, m in self.med.items()))
        say("- the generator (smtpgen.py, Python asyncio, pipelined MAIL/RCPT/DATA) used "
            "%s ms of CPU per message against the MTAs (%s against the bare sink); the "
            "machine has %d CPUs" % (
                "/".join(fmt(self.med[k]["gen_cpu"], 3) for k in self.med),
                fmt(self.ceil["gen_cpu"], 3), os.cpu_count()))
        if PROFILE:
            say("## profiles (BENCH_PROFILE=1), %d messages per round\n" % PROFILE_MESSAGES)
            for kind, mta in self.mtas.items():
                profile(mta, self.sink, PROFILE_MESSAGES, delivers[kind], PROFILE_DIR)
        for mta in self.mtas.values():
            mta.stop()
        self.delivers = delivers
        say("")

    def pressure_estimate(self):
        """Seconds the pressure table would take, from the main table's rates."""
        total = 0.0
        for kind, m in self.med.items():
            acc = m["accepted"] or 1.0
            dlv = m["delivered"] or acc
            total += PRESSURE_MESSAGES / acc + PRESSURE_MESSAGES / dlv + 10
        return total

    def pressure_table(self):
        n = PRESSURE_MESSAGES
        say("## queue under pressure: %d messages accepted with qmgr paused, then released\n"
            % n)
        say("Load: smtp-source -d, %d sessions, %d-byte messages. qmgr paused = its line "
            "taken out of master.cf before start (both MTAs); released = the line put back "
            "and a reload (`postfix reload`, `sluice reload`). Postfix runs with "
            "in_flow_delay = 0s here: its flow control waits for tokens that only qmgr "
            "hands out.\n" % (PRESSURE_SESSIONS, SIZE))
        self.press = {}
        for kind in list(self.med):
            extra = {"in_flow_delay": "0s"} if kind == "postfix" else None
            mta = self.make(kind, "pressure", extra)
            self.mtas[kind + "-pressure"] = mta
            mta.pause_qmgr()
            mta.start()
            try:
                root = mta.master_pid()
                cpu0 = tree_cpu(root)
                g = source_load(mta.port, n, PRESSURE_SESSIONS)
                cpu1 = tree_cpu(mta.master_pid() or root)
                depth = mta.queued()
                if g["rc"] != 0:
                    self.notes.append("%s pressure load: smtp-source exit %d: %s"
                                      % (kind, g["rc"], g["err"]))
                base = self.sink.count
                done_at = None
                with Sampler(mta) as mem:
                    t0 = time.monotonic()
                    mta.resume_qmgr()
                    if self.delivers.get(kind) and depth:
                        done_at = sink_wait(self.sink, base + depth, mta, stall=60.0)
                    else:
                        time.sleep(3.0)
                cpu2 = tree_cpu(mta.master_pid() or root)
                p = self.press[kind] = {
                    "accept_s": g["elapsed"], "depth": depth,
                    "qmgr": mem.qmgr_kb / 1024.0 if mem.qmgr_kb else None,
                    "drain_s": (done_at - t0) if done_at else None,
                    "acc_cpu": (cpu1 - cpu0) * 1000.0 / depth if depth else None,
                    "drain_cpu": (cpu2 - cpu1) * 1000.0 / depth if depth and done_at else None,
                    "gen_cpu": g["cpu"] * 1000.0 / depth if depth else None,
                }
                if not done_at:
                    self.notes.append("%s: the pressure queue did not drain (sink at %d of "
                                      "%d, queue %d)" % (kind, self.sink.count - base,
                                                         depth, mta.queued()))
                say("%s: accepted %d in %.1f s, drain %s, qmgr peak %s, cpu ms/msg "
                    "accept %s drain %s (smtp-source %s)"
                    % (kind, depth, g["elapsed"], unit(p["drain_s"], " s"),
                       unit(p["qmgr"], " MiB"), fmt(p["acc_cpu"], 3),
                       fmt(p["drain_cpu"], 3), fmt(p["gen_cpu"], 3)))
            finally:
                mta.stop()
                del self.mtas[kind + "-pressure"]
        say("\n| mta | accept %d s | accepted msg/s | queue depth | qmgr peak RSS MiB "
            "| drain s | drained msg/s |" % n)
        say("|---|---|---|---|---|---|---|")
        for kind, p in self.press.items():
            say("| %s | %s | %s | %d | %s | %s | %s |" % (
                kind, fmt(p["accept_s"]), fmt(p["depth"] / p["accept_s"]), p["depth"],
                fmt(p["qmgr"]), fmt(p["drain_s"]),
                fmt(p["depth"] / p["drain_s"] if p["drain_s"] else None)))
        s, q = self.press.get("sluice"), self.press.get("postfix")
        if s and q:
            r = lambda a, b: fmt(a / b, 2) if a is not None and b else "n/a"
            say("| sluice/postfix | %s | %s | %s | %s | %s | %s |" % (
                r(s["accept_s"], q["accept_s"]),
                r(s["depth"] / s["accept_s"], q["depth"] / q["accept_s"]),
                r(s["depth"], q["depth"]), r(s["qmgr"], q["qmgr"]),
                r(s["drain_s"], q["drain_s"]),
                r(s["depth"] / s["drain_s"] if s["drain_s"] else None,
                  q["depth"] / q["drain_s"] if q["drain_s"] else None)))
        say("")
        say("- queue depth = queue files after the load (what was accepted); drain = "
            "from the reload to the sink counting the last message; qmgr peak RSS = "
            "qmgr's VmHWM while it drains the whole queue")
        say("")

    def record(self, pressure_line):
        if not RESULTS:
            return
        parts = [time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                 "sluice " + tree_revision(),
                 "m=%d s=%d l=%d rounds=%d cpus=%d" % (MESSAGES, SESSIONS, SIZE, ROUNDS,
                                                        os.cpu_count())]
        for kind in MTAS:
            m = self.med.get(kind)
            if m:
                parts.append("%s acc %s del %s p50 %s p99 %s cpu %s rss %s%s" % (
                    kind, fmt(m["accepted"], 0), fmt(m["delivered"], 0), fmt(m["p50"], 2),
                    fmt(m["p99"], 2), fmt(m["cpu"], 3), fmt(m["rss"]),
                    " sys/msg %s fsync/msg %s cs/msg %s" % (
                        fmt(m["syscalls"], 1), fmt(m["fsyncs"], 2), fmt(m.get("switches"), 1))
                    if m.get("syscalls") is not None else ""))
            else:
                parts.append("%s n/a" % kind)
        if self.ratio:
            parts.append("ratio acc %s del %s" % (fmt(self.ratio["accepted"], 2),
                                                  fmt(self.ratio["delivered"], 2)))
        parts.append("ceil gen %s fsync %s/%s" % (fmt(self.ceil["gen"], 0),
                                                  fmt(self.ceil["fsync1"], 0),
                                                  fmt(self.ceil["fsyncN"], 0)))
        if pressure_line:
            parts.append(pressure_line)
        if self.dkim:
            parts.append("dkim " + " ".join(
                "%s acc %s del %s cpu %s" % (k, fmt(m["accepted"], 0),
                                             fmt(m["delivered"], 0), fmt(m["cpu"], 3))
                for k, m in self.dkim.items()))
        if self.shaping:
            m = self.shaping
            parts.append("shaping acc %s del %s cpu %s" % (
                fmt(m["accepted"], 0), fmt(m["delivered"], 0), fmt(m["cpu"], 3)))
        if getattr(self, "tls", None):
            parts.append("tls " + " ".join(
                "%s del %s cpu %s" % (k, fmt(m["delivered"], 0), fmt(m["cpu"], 3))
                for k, m in self.tls.items()))
        if getattr(self, "exporter", None):
            m = self.exporter
            parts.append("exporter webhook del %s ev/s %s drain ev/s %s" % (
                fmt(m["delivered"], 0), fmt(m["exported"], 0), fmt(m["drain"], 0)))
        if getattr(self, "obs", None):
            parts.append("obs " + " ".join(
                "%s del %s cpu %s" % (k, fmt(m["delivered"], 0), fmt(m["cpu_quiet"], 3))
                for k, m in self.obs.items()) +
                " spans/msg %s" % fmt(self.obs["on"]["spans"], 2))
        if getattr(self, "api", None):
            parts.append("api " + " ".join(
                "r%d req/s %s p50 %s p99 %s" % (k, fmt(m["rps"], 0), fmt(m["p50"], 2),
                                                fmt(m["p99"], 2))
                for k, m in self.api["rows"].items()) +
                " render rcpt/s %s" % fmt(self.api["render"], 0))
        path = Path(RESULTS)
        if not path.exists():
            path.write_text("# bench results\n\nOne line per recorded `make bench` "
                            "run (bench/bench.py appends it); see bench/README.\n\n")
        with path.open("a") as f:
            f.write("- " + " | ".join(parts) + "\n")
        say("recorded in %s" % path)

    def run(self):
        say("# sluice bench: %s, %d CPUs, kernel %s" % (
            time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), os.cpu_count(),
            os.uname().release))
        say("sluice from %s (%s); temporary folder %s\n" % (TOP, tree_revision(), self.base))
        names = self.usable()
        if "postfix" not in names and not os.access(SMTP_SINK, os.X_OK):
            sys.exit("bench: smtp-sink is needed (Debian's postfix package): %s"
                     % self.why_not.get("postfix"))
        self.sink = Sink(free_port())
        took = {}
        t = time.monotonic()
        self.ceilings()
        took["ceilings"] = time.monotonic() - t
        self.med, self.ratio, self.delivers = {}, {}, {}
        t = time.monotonic()
        if names:
            self.main_table(names)
        else:
            say("no MTA can run: %s" % self.why_not)
        took["main table" + (" and profiles" if PROFILE else "")] = time.monotonic() - t
        t = time.monotonic()
        pressure_line = None
        spent = time.monotonic() - self.started
        if PRESSURE != "0" and self.med:
            est = self.pressure_estimate()
            if PRESSURE == "auto" and spent + est > BUDGET:
                say("## queue under pressure: skipped (about %.0f s for %d messages would "
                    "take the run past BENCH_BUDGET=%d s; BENCH_PRESSURE=1 runs it, "
                    "BENCH_PRESSURE_MESSAGES=N sizes it)\n" % (est, PRESSURE_MESSAGES,
                                                               BUDGET))
            else:
                self.pressure_table()
                pressure_line = "pressure n=%d " % PRESSURE_MESSAGES + " ".join(
                    "%s acc %s qmgr %s drain %s" % (
                        k, unit(p["accept_s"], "s"), unit(p["qmgr"], "MiB"),
                        unit(p["drain_s"], "s"))
                    for k, p in self.press.items())
        if pressure_line:
            took["pressure"] = time.monotonic() - t
        t = time.monotonic()
        self.dkim = {}
        if DKIM and "sluice" in self.med:
            self.dkim_table()
            took["dkim"] = time.monotonic() - t
        t = time.monotonic()
        self.shaping = None
        if SHAPING and "sluice" in self.med:
            self.shaping_table()
            took["shaping"] = time.monotonic() - t
        t = time.monotonic()
        self.exporter = None
        if EXPORTER and "sluice" in self.med:
            self.exporter_table()
            took["exporter"] = time.monotonic() - t
        t = time.monotonic()
        self.obs = None
        if OBS and "sluice" in self.med:
            self.obs_table()
            took["metrics and tracing"] = time.monotonic() - t
        t = time.monotonic()
        self.api = None
        if API and "sluice" in self.med:
            self.api_table()
            took["api"] = time.monotonic() - t
        t = time.monotonic()
        self.tls = {}
        if TLS and self.med:
            self.tls_table([k for k in self.med])
            took["tls"] = time.monotonic() - t
        self.record(pressure_line)
        t = time.monotonic()
        if self.map_table():
            took["lookup tables"] = time.monotonic() - t
        say("bench took %.0f s (%s)" % (time.monotonic() - self.started, ", ".join(
            "%s %.0f s" % kv for kv in took.items())))

    def dkim_table(self):
        """The main load through sluice instances that DKIM-sign every
        message (the envelope sender's domain, bench.test, is in
        dkim_signing_maps), with an RSA-2048 and with an Ed25519 key."""
        say("## DKIM signing: %d messages of %d bytes, %d sessions, median of %d rounds\n"
            % (MESSAGES, SIZE, SESSIONS, ROUNDS))
        for label, opts in (("rsa-2048", []), ("ed25519", ["--ed25519"])):
            mta = self.make("sluice", "dkim-" + label)
            r = mta._sluice("dkim", "keygen", "bench.test", "bench", *opts)
            key = re.search(r"^private key: (\S+)$", r.stdout, re.M).group(1)
            mta._sluice("conf", "dkim_signing_maps=inline:{bench.test=bench:%s}" % key)
            mta.start()
            try:
                base = self.sink.count
                g = generate(mta.port, 20)
                ok = bool(g["messages"]) and \
                    sink_wait(self.sink, base + g["messages"], mta) is not None
                signed = mta.maillog.read_text(errors="replace").count("DKIM-Signature added")
                if signed < g["messages"]:
                    raise RuntimeError("dkim %s: %d of %d warm-up messages signed; maillog:\n%s"
                                       % (label, signed, g["messages"], mta.log_tail()))
                rows = [measure(mta, self.sink, MESSAGES, ok) for _ in range(ROUNDS)]
            finally:
                mta.stop()
            self.dkim[label] = {k: median([x[k] for x in rows])
                                for k in ("accepted", "delivered", "p50", "p99", "cpu")}
        off = self.med["sluice"]
        say("| sluice | accepted msg/s | delivered msg/s | p50 accept ms | p99 accept ms "
            "| cpu ms/msg |")
        say("|---|---|---|---|---|---|")
        for label, m in [("no signing (main table)", off)] + [
                ("signs, " + k, v) for k, v in self.dkim.items()]:
            say("| %s | %s | %s | %s | %s | %s |" % (
                label, fmt(m["accepted"]), fmt(m["delivered"]), fmt(m["p50"], 2),
                fmt(m["p99"], 2), fmt(m["cpu"], 3)))
        say("")

    def shaping_table(self):
        """The main load through a sluice instance whose shaping rules
        apply to every delivery (a `default` rule) without ever holding
        one back: what the scheduler itself costs."""
        say("## shaping scheduler: %d messages of %d bytes, %d sessions, median of %d rounds\n"
            % (MESSAGES, SIZE, SESSIONS, ROUNDS))
        mta = self.make("sluice", "shaping")
        rules = mta.dir / "shaping"
        rules.write_text("default max_connections=10000 message_rate=1000000/s"
                         " connection_rate=1000000/s burst=1000000\n")
        mta._sluice("conf", "smtp_shaping_maps=texthash:%s" % rules)
        mta.start()
        try:
            base = self.sink.count
            g = generate(mta.port, 20)
            ok = bool(g["messages"]) and \
                sink_wait(self.sink, base + g["messages"], mta) is not None
            # qmgr read the rules (it warns through sluice shaping when it
            # refused them; an idle bucket is forgotten, so none is listed)
            shown = mta._sluice("shaping", check=False)
            if shown.returncode != 0 or shown.stderr.strip():
                raise RuntimeError("shaping: the rules are not in force; "
                                   "sluice shaping said:\n%s%s"
                                   % (shown.stdout, shown.stderr))
            rows = [measure(mta, self.sink, MESSAGES, ok) for _ in range(ROUNDS)]
        finally:
            mta.stop()
        self.shaping = {k: median([x[k] for x in rows])
                        for k in ("accepted", "delivered", "p50", "p99", "cpu")}
        off = self.med["sluice"]
        say("| sluice | accepted msg/s | delivered msg/s | p50 accept ms | p99 accept ms "
            "| cpu ms/msg |")
        say("|---|---|---|---|---|---|")
        for label, m in (("no rules (main table)", off),
                         ("a default rule that never binds", self.shaping)):
            say("| %s | %s | %s | %s | %s | %s |" % (
                label, fmt(m["accepted"]), fmt(m["delivered"]), fmt(m["p50"], 2),
                fmt(m["p99"], 2), fmt(m["cpu"], 3)))
        if off.get("delivered"):
            say("\ndelivered with the rule / without: %s\n"
                % fmt(self.shaping["delivered"] / off["delivered"], 2))
        else:
            say("")

    def exporter_table(self):
        """The main load through a sluice instance that exports every
        journal event to a webhook (HookCounter): delivered msg/s, the
        events/s the webhook received from the round's start until it had
        all of them (received and delivered: 2 a message), and, with the
        webhook answering 503 during one more round, the events/s of that
        backlog from its first accepted POST to its last event."""
        say("## event exporter (webhook): %d messages of %d bytes, %d sessions,"
            " median of %d rounds\n" % (MESSAGES, SIZE, SESSIONS, ROUNDS))
        hook = HookCounter()
        mta = self.make("sluice", "exporter")
        mta._sluice("conf", "events_webhook_urls=%s" % hook.url)
        mta._sluice("conf", "events_webhook_max_backoff=1s")
        mta.start()
        rows, drains = [], []
        try:
            base = self.sink.count
            g = generate(mta.port, 20)
            ok = bool(g["messages"]) and \
                sink_wait(self.sink, base + g["messages"], mta) is not None
            if not ok or hook.wait_for(2 * g["messages"]) is None:
                raise RuntimeError("exporter: the warm-up's events did not reach the"
                                   " webhook (%d); maillog:\n%s" % (hook.count, mta.log_tail()))
            for _ in range(ROUNDS):
                before = hook.count
                t0 = time.monotonic()
                r = measure(mta, self.sink, MESSAGES, ok)
                done = hook.wait_for(before + 2 * r["messages"])
                r["exported"] = 2 * r["messages"] / (done - t0) if done else None
                rows.append(r)
            # A backlog: the webhook refuses a round's events, then takes them.
            before = hook.count
            hook.set_failing(True)
            r = measure(mta, self.sink, MESSAGES, ok)
            refused = hook.refused
            wait_until_true(lambda: hook.refused > refused, 30)
            hook.set_failing(False)
            done = hook.wait_for(before + 2 * r["messages"])
            if done and hook.first_ok:
                drains.append(2 * r["messages"] / max(done - hook.first_ok, 1e-3))
        finally:
            mta.stop()
            hook.stop()
        self.exporter = {k: median([x[k] for x in rows])
                         for k in ("delivered", "exported", "cpu")}
        self.exporter["drain"] = median(drains)
        off = self.med["sluice"]
        say("| sluice | delivered msg/s | events/s exported while mail flows "
            "| events/s exported from a backlog | cpu ms/msg |")
        say("|---|---|---|---|---|")
        say("| no exporter (main table) | %s | n/a | n/a | %s |"
            % (fmt(off["delivered"]), fmt(off["cpu"], 3)))
        say("| webhook exporter | %s | %s | %s | %s |\n" % (
            fmt(self.exporter["delivered"]), fmt(self.exporter["exported"]),
            fmt(self.exporter["drain"]), fmt(self.exporter["cpu"], 3)))

    def obs_table(self):
        """The main load through two sluice instances of the same settings:
        one with metrics and tracing off (the defaults), one with
        metrics_listen on loopback, scraped every second by a Scraper, and
        otel_exporter_otlp_endpoint pointing at an OtlpCounter with
        otel_traces_sampler_ratio = 1.0. Per round: delivered msg/s, cpu
        ms/msg as measure() counts it (to the last delivery) and again to
        OBS_QUIET s without a new span (the same wait when off), so the
        spans exported after the last delivery are paid for; spans
        received per message."""
        say("## metrics and tracing: %d messages of %d bytes, %d sessions, median of %d"
            " rounds\n" % (MESSAGES, SIZE, SESSIONS, ROUNDS))
        self.obs = {}
        for label in ("off", "on"):
            recv = scraper = None
            extra = None
            if label == "on":
                recv = OtlpCounter()
                mport = free_port()
                extra = {"metrics_listen": "127.0.0.1:%d" % mport,
                         "otel_exporter_otlp_endpoint": recv.url,
                         "otel_traces_sampler_ratio": "1.0"}
            mta = self.make("sluice", "obs-" + label, extra)
            rows = []
            try:
                mta.start()
                if recv:
                    if not wait_port(mport):
                        raise RuntimeError("obs: metrics did not listen on %d; maillog:\n%s"
                                           % (mport, mta.log_tail()))
                    scraper = Scraper(mport)
                base = self.sink.count
                g = generate(mta.port, 20)
                ok = bool(g["messages"]) and \
                    sink_wait(self.sink, base + g["messages"], mta) is not None
                if recv:
                    recv.settle(OBS_QUIET)
                    if not ok or not recv.spans or not scraper.ok:
                        raise RuntimeError(
                            "obs: the warm-up gave %d spans (%d bad POSTs) and %d good"
                            " scrapes (%d failed: %s), delivered: %s; maillog:\n%s"
                            % (recv.spans, recv.bad, scraper.ok, scraper.failed,
                               scraper.last_error, ok, mta.log_tail()))
                for _ in range(ROUNDS):
                    if ok:
                        wait_empty(mta)
                    root = mta.master_pid()
                    spans0 = recv.spans if recv else 0
                    cpu0 = tree_cpu(root) if root else 0.0
                    r = measure(mta, self.sink, MESSAGES, ok)
                    if recv:
                        recv.settle(OBS_QUIET)
                    else:
                        time.sleep(OBS_QUIET)
                    n = r["messages"]
                    r["cpu_quiet"] = (tree_cpu(mta.master_pid() or root) - cpu0) \
                        * 1000.0 / n if n else None
                    r["spans"] = (recv.spans - spans0) / n if recv and n else None
                    rows.append(r)
                    say("%s: delivered %s msg/s  cpu %s ms/msg (%s to quiet)  spans/msg %s"
                        % (label, fmt(r["delivered"]), fmt(r["cpu"], 3),
                           fmt(r["cpu_quiet"], 3), fmt(r["spans"], 2)))
            finally:
                if scraper:
                    scraper.stop()
                mta.stop()
                if recv:
                    recv.stop()
            m = {k: median([x[k] for x in rows])
                 for k in ("accepted", "delivered", "p50", "p99", "cpu", "cpu_quiet",
                           "spans")}
            m["scrapes"] = (scraper.ok, scraper.failed, scraper.size) if scraper else None
            self.obs[label] = m
        say("| sluice | delivered msg/s | accepted msg/s | p99 accept ms | cpu ms/msg "
            "| cpu ms/msg to quiet | spans/msg |")
        say("|---|---|---|---|---|---|---|")
        for label, name in (("off", "metrics and tracing off"),
                            ("on", "metrics scraped every 1 s, traces at ratio 1.0")):
            m = self.obs[label]
            say("| %s | %s | %s | %s | %s | %s | %s |" % (
                name, fmt(m["delivered"]), fmt(m["accepted"]), fmt(m["p99"], 2),
                fmt(m["cpu"], 3), fmt(m["cpu_quiet"], 3),
                fmt(m["spans"], 2) if label == "on" else "n/a"))
        on, off = self.obs["on"], self.obs["off"]
        ok_, failed, size = on["scrapes"]
        say("\n- on / off: delivered %s, cpu to quiet %s (%s ms/msg more); %d scrapes"
            " answered (%d failed), the last %d bytes"
            % (fmt(on["delivered"] / off["delivered"], 2)
               if on["delivered"] and off["delivered"] else "n/a",
               fmt(on["cpu_quiet"] / off["cpu_quiet"], 2)
               if on["cpu_quiet"] and off["cpu_quiet"] else "n/a",
               fmt(on["cpu_quiet"] - off["cpu_quiet"], 3)
               if on["cpu_quiet"] is not None and off["cpu_quiet"] is not None else "n/a",
               ok_, failed, size))
        say("- cpu ms/msg: the instance's process tree from the round's start to the "
            "sink's last message, as in the main table; to quiet: to %.0f s without a "
            "new span at the receiver (off: %.0f s after the last message), so the "
            "events daemon's export of the round's spans counts\n" % (OBS_QUIET, OBS_QUIET))

    def api_table(self):
        """The HTTP API (api(8), render(8)) of a sluice instance relaying to
        the sink: API_REQUESTS requests from API_CLIENTS clients on
        keep-alive connections, each request's time to its 202, at 1 and
        100 recipients per request (each row's mail delivered before the
        next), then the render service's pace on one templated batch."""
        say("## HTTP API: %d requests of 1 recipient and %d of 100 from %d "
            "clients; one batch of %d recipients\n"
            % (API_REQUESTS, max(1, API_REQUESTS // 10), API_CLIENTS, API_BATCH))
        port = free_port()
        mta = self.make("sluice", "api", {"api_listen": "127.0.0.1:%d" % port})
        mta.start()
        rows = {}
        render = None
        try:
            key = mta._sluice("api", "key", "create", "bench", "--scope",
                              "send,templates").stdout.strip()
            if not wait_port(port):
                raise RuntimeError("api did not listen on %d; maillog:\n%s"
                                   % (port, mta.log_tail()))
            for nrcpt, nreq in ((1, API_REQUESTS), (100, max(1, API_REQUESTS // 10))):
                base = self.sink.count
                t0 = time.monotonic()
                lat = api_load(port, key, nreq, API_CLIENTS, nrcpt)
                took = time.monotonic() - t0
                if len(lat) < nreq:
                    raise RuntimeError("api: %d of %d requests got no 202; maillog:\n%s"
                                       % (nreq - len(lat), nreq, mta.log_tail()))
                lat.sort()
                rows[nrcpt] = {"rps": len(lat) / took,
                               "p50": 1000 * lat[len(lat) // 2],
                               "p99": 1000 * lat[min(len(lat) - 1, len(lat) * 99 // 100)]}
                if sink_wait(self.sink, base + nreq * nrcpt, mta) is None:
                    raise RuntimeError("api: the mail of %d-recipient requests was"
                                       " not delivered; maillog:\n%s"
                                       % (nrcpt, mta.log_tail()))
            status, _ = api_call(port, key, "PUT", "/v1/templates/bench",
                                 {"subject": "Hi {{name}}",
                                  "text": "Hello {{name}}, code {{code}}\n"})
            if status != 200:
                raise RuntimeError("api: PUT template: %s" % status)
            spool = mta.queue / "api" / "batches"
            t0 = time.monotonic()
            status, _ = api_call(port, key, "POST", "/v1/messages", {
                "from": "bench@sender.test", "template": "bench",
                "recipients": [{"to": "b%d@rcpt.test" % i,
                                "data": {"name": "N%d" % i, "code": i}}
                               for i in range(API_BATCH)]})
            if status != 202:
                raise RuntimeError("api: the batch got %s" % status)
            def spool_empty():
                return spool.exists() and not os.listdir(spool)
            wait_until_true(spool_empty, 600)
            if spool_empty():
                render = API_BATCH / (time.monotonic() - t0)
        finally:
            mta.stop()
        self.api = {"rows": rows, "render": render}
        say("| recipients per request | accepted requests/s | p50 ms to 202 "
            "| p99 ms to 202 |")
        say("|---|---|---|---|")
        for nrcpt, m in rows.items():
            say("| %d%s | %s | %s | %s |" % (
                nrcpt, " (spooled)" if nrcpt >= 100 else "", fmt(m["rps"]),
                fmt(m["p50"], 2), fmt(m["p99"], 2)))
        say("\nrender service: %s recipients/s (a batch of %d, from its 202 to "
            "the spool empty)\n" % (fmt(render), API_BATCH))
    def tls_table(self, names):
        """The main load sent to each MTA over STARTTLS (smtpgen
        --starttls) and relayed over STARTTLS (level encrypt) to
        tls_sink.py, with certificates made here; the warm-up must log TLS
        connections in and out, and the sink refuses plain-text mail."""
        say("## TLS: generator -> MTA -> sink all over STARTTLS (level encrypt out), %d messages"
            " of %d bytes, %d sessions, median of %d rounds\n"
            % (MESSAGES, SIZE, SESSIONS, ROUNDS))
        folder = self.base / "tls"
        folder.mkdir()
        cert, key = folder / "sink.pem", folder / "sink.key"
        run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj",
             "/CN=sink.bench.test", "-keyout", str(key), "-out", str(cert)])
        # The MTAs' own smtpd certificate: key and certificate in one PEM.
        mta_key, mta_cert = folder / "mta.key", folder / "mta.pem"
        run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj",
             "/CN=mta.bench.test", "-keyout", str(mta_key), "-out", str(mta_cert)])
        chain = folder / "mta-chain.pem"
        chain.write_text(mta_key.read_text() + mta_cert.read_text())
        os.chmod(folder, 0o755)
        for p in (key, cert, mta_key, mta_cert, chain):
            os.chmod(p, 0o644)
        port = free_port()
        sink = Sink(port, argv=[PYTHON, str(TLS_SINK), str(cert), str(key),
                                "127.0.0.1:%d" % port])
        try:
            for kind in names:
                extra = {"smtp_tls_security_level": "encrypt",
                         "smtpd_tls_security_level": "may",
                         "smtpd_tls_chain_files": str(chain)}
                if kind == "postfix":
                    extra["smtp_tls_loglevel"] = "1"
                    extra["smtpd_tls_loglevel"] = "1"
                cls = Postfix if kind == "postfix" else Sluice
                mta = cls(self.base / ("%s-tls" % kind), free_port(), sink.port, extra)
                mta.start()
                try:
                    base = sink.count
                    g = generate(mta.port, 20, starttls=True)
                    if not g["messages"] or sink_wait(sink, base + g["messages"], mta) is None:
                        raise RuntimeError("tls: %s did not take and deliver the warm-up over"
                                           " TLS (%s); maillog:\n%s"
                                           % (kind, g["last_error"], mta.log_tail()))
                    log = mta.maillog.read_text(errors="replace")
                    if "TLS connection established to" not in log or \
                            "TLS connection established from" not in log:
                        raise RuntimeError("tls: %s logged no TLS connection in and out;"
                                           " maillog:\n%s" % (kind, mta.log_tail()))
                    rows = [measure(mta, sink, MESSAGES, True, starttls=True)
                            for _ in range(ROUNDS)]
                finally:
                    mta.stop()
                self.tls[kind] = {k: median([x[k] for x in rows])
                                  for k in ("accepted", "delivered", "p50", "p99", "cpu")}
        finally:
            sink.stop()
        say("| MTA | delivered msg/s | accepted msg/s | cpu ms/msg | plain text (main table):"
            " delivered msg/s | cpu ms/msg | TLS - plain cpu ms/msg |")
        say("|---|---|---|---|---|---|---|")
        for kind, m in self.tls.items():
            off = self.med.get(kind, {})
            extra = (m["cpu"] - off["cpu"]) if m["cpu"] is not None and \
                off.get("cpu") is not None else None
            say("| %s | %s | %s | %s | %s | %s | %s |" % (
                kind, fmt(m["delivered"]), fmt(m["accepted"]), fmt(m["cpu"], 3),
                fmt(off.get("delivered")), fmt(off.get("cpu"), 3), fmt(extra, 3)))
        if "postfix" in self.tls and "sluice" in self.tls and \
                self.tls["postfix"]["delivered"] and self.tls["sluice"]["delivered"]:
            say("\nover TLS, sluice/postfix delivered: %s, cpu postfix/sluice: %s\n" % (
                fmt(self.tls["sluice"]["delivered"] / self.tls["postfix"]["delivered"], 2),
                fmt(self.tls["postfix"]["cpu"] / self.tls["sluice"]["cpu"], 2)
                if self.tls["sluice"]["cpu"] else "n/a"))
        else:
            say("")

    def map_table(self):
        """bench/map_bench.py (lookup tables: a 1,000,000-key build), when it
        exists and BENCH_MAPS is not 0: run it and print what it prints."""
        script = HERE / "map_bench.py"
        if not MAPS or not script.exists():
            return False
        say("## lookup tables (bench/map_bench.py)\n")
        env = dict(os.environ, SLUICE_TOP=str(TOP))
        try:
            r = subprocess.run([PYTHON, str(script)], capture_output=True, text=True,
                               timeout=1800, stdin=subprocess.DEVNULL, env=env)
        except subprocess.TimeoutExpired:
            say("map_bench.py: no result within 1800 s\n")
            return True
        say(r.stdout.rstrip() + "\n")
        if r.returncode != 0:
            say("map_bench.py: exit %d: %s\n" % (r.returncode, r.stderr.strip()[-500:]))
        return True

    def cleanup(self):
        for mta in self.mtas.values():
            try:
                mta.stop()
            except Exception as e:      # keep cleaning up
                say("bench: stopping %s: %s" % (mta.name, e))
        if self.sink:
            self.sink.stop()
        if KEEP:
            say("kept %s" % self.base)
        else:
            shutil.rmtree(str(self.base), ignore_errors=True)


def tree_revision():
    """The sluice tree's commit (short, '+dirty' when changed), or '?';
    SLUICE_REVISION names it for a tree copied out of git."""
    if os.environ.get("SLUICE_REVISION"):
        return os.environ["SLUICE_REVISION"]
    try:
        r = subprocess.run(["git", "-C", str(TOP), "describe", "--always", "--dirty=+dirty"],
                           capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "?"
    return r.stdout.strip() if r.returncode == 0 and r.stdout.strip() else "?"


def wait_until_true(predicate, timeout):
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.05)


class HookCounter:
    """A webhook endpoint on loopback for the exporter table: counts the
    events of every POST (a JSON array); answers 503 while failing."""

    def __init__(self):
        import http.server
        hook = self
        self.count = 0
        self.refused = 0
        self.failing = False
        self.first_ok = None        # first 200 after set_failing(False)
        self.lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with hook.lock:
                    failing = hook.failing
                    if failing:
                        hook.refused += 1
                if failing:
                    self.send_response(503)
                    self.end_headers()
                    return
                try:
                    n = len(json.loads(body))
                except ValueError:
                    n = 0
                with hook.lock:
                    if hook.first_ok is None:
                        hook.first_ok = time.monotonic()
                    hook.count += n
                self.send_response(200)
                self.end_headers()

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = "http://127.0.0.1:%d/hook" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def set_failing(self, failing):
        with self.lock:
            self.failing = failing
            self.first_ok = None

    def wait_for(self, n, stall=STALL):
        """monotonic time when count reached n; None when it stopped
        growing for stall seconds first"""
        last, since = self.count, time.monotonic()
        while self.count < n:
            time.sleep(0.02)
            if self.count != last:
                last, since = self.count, time.monotonic()
            elif time.monotonic() - since > stall:
                return None
        return time.monotonic()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class OtlpCounter:
    """A tiny OTLP/HTTP receiver on loopback for the observability table:
    POST /v1/traces (OTLP JSON) answers 200 and counts the spans in
    resourceSpans -> scopeSpans -> spans; anything else is 404."""

    def __init__(self):
        import http.server
        recv = self
        self.spans = 0
        self.posts = 0
        self.bad = 0
        self.last = None            # monotonic time of the last spans taken
        self.lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path != "/v1/traces":
                    self.send_response(404)
                    self.end_headers()
                    return
                try:
                    n = sum(len(ss.get("spans", []))
                            for rs in json.loads(body)["resourceSpans"]
                            for ss in rs.get("scopeSpans", []))
                except (ValueError, KeyError, TypeError, AttributeError):
                    with recv.lock:
                        recv.bad += 1
                    self.send_response(400)
                    self.end_headers()
                    return
                with recv.lock:
                    recv.posts += 1
                    recv.spans += n
                    recv.last = time.monotonic()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def settle(self, quiet=2.0, limit=STALL):
        """Wait until no span came for quiet seconds (at most limit
        seconds in all); the span count then."""
        deadline = time.monotonic() + limit
        last, since = self.spans, time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.05)
            if self.spans != last:
                last, since = self.spans, time.monotonic()
            elif time.monotonic() - since >= quiet:
                break
        return self.spans

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class Scraper:
    """GET /metrics on 127.0.0.1:port every interval seconds in a thread,
    as Prometheus would: counts answers 200 and failures, keeps the size
    of the last body."""

    def __init__(self, port, interval=1.0):
        self.port, self.interval = port, interval
        self.ok = self.failed = self.size = 0
        self.last_error = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def scrape(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", "/metrics")
            resp = conn.getresponse()
            body = resp.read()
            if resp.status == 200 and b"sluice_" in body:
                self.ok += 1
                self.size = len(body)
            else:
                self.failed += 1
                self.last_error = "status %d, %d bytes" % (resp.status, len(body))
        except (OSError, http.client.HTTPException) as e:
            self.failed += 1
            self.last_error = str(e)
        finally:
            conn.close()

    def _loop(self):
        while not self._stop.is_set():
            self.scrape()
            self._stop.wait(self.interval)

    def stop(self):
        self._stop.set()
        self._thread.join()


def api_call(port, key, method, path, body, conn=None):
    """One API request; (status, seconds) (conn: a kept connection)."""
    own = conn is None
    if own:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    t0 = time.monotonic()
    try:
        conn.request(method, path, body=json.dumps(body).encode(),
                     headers={"Authorization": "Bearer " + key,
                              "Content-Type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        return resp.status, time.monotonic() - t0
    finally:
        if own:
            conn.close()


def api_load(port, key, requests, clients, nrcpt):
    """requests POSTs of nrcpt recipients each from clients threads on
    keep-alive connections; the latencies of those answered 202."""
    lat, lock = [], threading.Lock()
    pending = iter(range(requests))

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        try:
            while True:
                with lock:
                    i = next(pending, None)
                if i is None:
                    return
                body = {"from": "bench@sender.test", "subject": "s", "text": "t"}
                if nrcpt == 1:
                    body["to"] = ["a%d@rcpt.test" % i]
                else:
                    body["recipients"] = [{"to": "a%d.%d@rcpt.test" % (i, j)}
                                          for j in range(nrcpt)]
                status, took = api_call(port, key, "POST", "/v1/messages", body,
                                        conn)
                if status == 202:
                    with lock:
                        lat.append(took)
        except (OSError, http.client.HTTPException):
            return
        finally:
            conn.close()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return lat


def sink_wait(sink, n, mta, stall=STALL):
    return sink.wait_for(n, progress=mta.queued, stall=stall)


def main():
    bench = Bench()
    try:
        bench.run()
    except (RuntimeError, subprocess.SubprocessError, OSError) as e:
        say("bench: %s" % e)
        return 1
    finally:
        bench.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
