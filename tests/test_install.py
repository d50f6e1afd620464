"""test_install - `make install` ships what a Debian admin expects

`make install DESTDIR=... PREFIX=/usr` into a temporary folder must put the
manual pages under PREFIX/share/man, the systemd unit under
/lib/systemd/system, the logrotate snippet under /etc/logrotate.d, and an
/etc/aliases (postmaster: root) when there is none, never replacing one.
The pages are checked with mandoc -T lint (or groff's warnings), main.cf(5)
against the parameter table the programs read, the unit with
systemd-analyze verify when it is installed. The two promises the unit and
the logrotate snippet rest on are tested on a running instance: `sluice
start` returns with the PID file naming the live master (Type=forking), and
a rotation (rename, create, `sluice reload`) moves every process to the new file.
"""

import os
import re
import shutil
import smtplib
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import BIN, TOP, wait_until, pid_alive, proc_name

PAGES = {
    "man1": ["sluice.1", "sendmail.1", "mailq.1", "newaliases.1"],
    "man5": ["main.cf.5", "master.cf.5"],
    "man8": ["master.8", "smtpd.8", "cleanup.8", "pickup.8", "qmgr.8",
             "smtp.8", "bounce.8", "local.8"],
}


def make_env():
    """The environment for a make run from inside a test: no jobserver or
    flags of a make that may have started pytest."""
    env = dict(os.environ)
    for name in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES"):
        env.pop(name, None)
    return env


def run_make(*args, cwd=TOP):
    r = subprocess.run(["make", "-s", "--no-print-directory"] + list(args),
                       cwd=cwd, capture_output=True, text=True, timeout=600,
                       env=make_env())
    assert r.returncode == 0, "make %s failed:\n%s%s" % (
        " ".join(args), r.stdout[-3000:], r.stderr[-3000:])
    return r


def config_mk(name):
    """A variable of config.mk, as ./configure wrote it."""
    for line in (TOP / "config.mk").read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == name:
            return value.strip()
    raise AssertionError("config.mk has no %s" % name)


@pytest.fixture(scope="module")
def staged():
    """One `make install DESTDIR=tmp PREFIX=/usr` for the module."""
    dest = Path(tempfile.mkdtemp(prefix="sluice-install-"))
    run_make("install", "DESTDIR=%s" % dest, "PREFIX=/usr")
    yield dest
    shutil.rmtree(dest, ignore_errors=True)


def test_install_puts_pages_unit_logrotate_and_aliases_in_place(staged):
    for section, pages in PAGES.items():
        for page in pages:
            path = staged / "usr/share/man" / section / page
            assert path.is_file(), "%s not installed" % path
            assert path.stat().st_mode & 0o777 == 0o644, path
            text = path.read_text()
            assert text.startswith(".TH "), "%s is not a man page" % path
            assert "@" + "SYSCONFDIR@" not in text and "@PARAMETERS@" not in text
    unit = staged / "lib/systemd/system/sluice.service"
    logrotate = staged / "etc/logrotate.d/sluice"
    aliases = staged / "etc/aliases"
    for path in (unit, logrotate, aliases):
        assert path.is_file(), "%s not installed" % path
        assert path.stat().st_mode & 0o777 == 0o644, path
    text = unit.read_text()
    assert "ExecStart=/usr/sbin/sluice start\n" in text
    assert "ExecReload=/usr/sbin/sluice reload\n" in text
    assert "ExecStop=/usr/sbin/sluice stop\n" in text
    assert "Type=forking\n" in text
    assert "PIDFile=%s/pid/master.pid\n" % config_mk("QUEUEDIR") in text
    assert re.search(r"^/var/log/sluice\.log \{$", logrotate.read_text(), re.M)
    assert re.search(r"^\s*create$", logrotate.read_text(), re.M)
    assert re.search(r"^\s*/usr/sbin/sluice reload", logrotate.read_text(), re.M)
    assert re.search(r"^postmaster:\s*root$", aliases.read_text(), re.M)


def test_html_is_built_from_the_same_pages(staged):
    if shutil.which("mandoc") is None:
        pytest.skip("mandoc not installed: html/ is not built")
    index = (TOP / "html" / "index.html").read_text()
    for pages in PAGES.values():
        for page in pages:
            html = TOP / "html" / (page + ".html")
            assert html.is_file(), "%s not built" % html
            assert 'href="%s.html"' % page in index


def test_man_pages_lint_clean(staged):
    pages = [staged / "usr/share/man" / s / p for s, ps in PAGES.items() for p in ps]
    if shutil.which("mandoc"):
        r = subprocess.run(["mandoc", "-T", "lint", "-W", "warning"] + [str(p) for p in pages],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and not r.stdout and not r.stderr, r.stdout + r.stderr
    elif shutil.which("man"):
        for p in pages:
            r = subprocess.run(["man", "--warnings", "-E", "UTF-8", "-l", str(p)],
                               capture_output=True, text=True, timeout=60,
                               env=dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8"))
            assert r.returncode == 0 and not r.stderr, "%s: %s" % (p, r.stderr)
    else:
        pytest.skip("neither mandoc nor man is installed")


def test_main_cf_page_lists_every_parameter_with_its_default(staged, instance):
    """main.cf(5) is generated from the table: every parameter that `sluice
    conf -d` knows is there, with the default the table gives."""
    page = (staged / "usr/share/man/man5/main.cf.5").read_text()
    names = [line.split(" = ")[0] for line in
             instance.check("conf", "-d").splitlines() if " = " in line]
    assert len(names) > 50
    for name in names:
        m = re.search(r"^\\fB%s\\fR \(([^)]+)\)\n(.*?)(?=^\.TP$|^\.SH )"
                      % re.escape(name), page, re.M | re.S)
        assert m, "main.cf(5) does not describe %s" % name
        shown = instance.check("conf", "-d", name).splitlines()
        default = shown[0].split(" = ", 1)[1]
        described = m.group(2).replace("\\-", "-").replace("\n", " ")
        if name in ("config_directory", "myhostname", "mydomain", "mail_owner"):
            continue                    # computed at run time
        if default == "":
            assert "Default: empty." in described, name
        else:
            assert "Default: \\fB%s\\fR." % default in described, (name, described)


def test_existing_aliases_is_left_alone(tmp_path):
    mine = tmp_path / "etc" / "aliases"
    mine.parent.mkdir()
    mine.write_text("postmaster: alice\n")
    run_make("-C", "conf", "-f", "Makefile.in", "install",
             "DESTDIR=%s" % tmp_path, "PREFIX=/usr")
    assert mine.read_text() == "postmaster: alice\n"
    assert (tmp_path / "lib/systemd/system/sluice.service").is_file()


def test_newaliases_builds_the_installed_aliases(staged, instance):
    """Without /etc/aliases newaliases exits 78 (EX_CONFIG); with the one
    make install put there it builds the table."""
    copy = instance.dir / "etc-aliases"
    instance.conf_set(alias_database="hash:%s" % copy)
    env = dict(os.environ)
    env.pop("SLUICE_CONFIG", None)
    argv = [str(BIN / "sendmail"), "-C", str(instance.dir), "-bi"]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 78, r.stderr
    shutil.copy(staged / "etc/aliases", copy)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    assert Path(str(copy) + ".db").is_file()
    r = instance.command("map", "-a", "-q", "postmaster", "hash:%s" % copy)
    assert r.returncode == 0 and r.stdout.strip() == "root", r.stdout + r.stderr


def test_systemd_unit_verifies(staged, tmp_path):
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze not installed")
    # The commands must exist for verify: point them into the staged tree.
    text = (staged / "lib/systemd/system/sluice.service").read_text()
    text = text.replace("=/usr/sbin/", "=%s/usr/sbin/" % staged)
    unit = tmp_path / "sluice.service"
    unit.write_text(text)
    r = subprocess.run([tool, "verify", "--man=no", str(unit)],
                       capture_output=True, text=True, timeout=120)
    # verify exits 0 even for a line it ignores: nothing may be printed.
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr


def test_start_returns_with_the_pid_file_of_the_live_master(instance):
    """What Type=forking with PIDFile= relies on: when `sluice start`
    returns, the PID file names the running master; `sluice stop` returns
    only when that process has gone."""
    r = instance.command("start")
    assert r.returncode == 0, r.stderr
    pid_file = instance.queue_dir / "pid" / "master.pid"
    pid = int(pid_file.read_text().split()[0])
    assert pid_alive(pid) and proc_name(pid) == "master"
    assert instance.stop().returncode == 0
    assert not pid_alive(pid)


def test_logrotate_rotation_moves_every_process_to_the_new_file(staged, make_instance, tmp_path):
    """The installed snippet, aimed at an instance's log and its sluice: after
    a forced rotation (rename, create, postrotate `sluice reload`), the old
    lines are in maillog.1, and master's own next lines as well as a fresh
    smtpd's land in the new maillog. Before master reopened its log on
    reload, its lines went on into maillog.1."""
    tool = shutil.which("logrotate")
    if tool is None:
        pytest.skip("logrotate not installed")
    inst = make_instance(start=True)
    inst.wait_log(r"master.*daemon started")
    snippet = (staged / "etc/logrotate.d/sluice").read_text()
    snippet = snippet.replace("/var/log/sluice.log", str(inst.maillog))
    snippet = snippet.replace("/usr/sbin/sluice reload",
                              "%s -c %s reload" % (BIN / "sluice", inst.dir))
    assert str(inst.dir) in snippet
    conf = tmp_path / "logrotate.conf"
    conf.write_text(snippet)
    conf.chmod(0o644)
    mode = inst.maillog.stat().st_mode & 0o777
    old_smtpd = inst.child("smtpd")
    r = subprocess.run([tool, "-f", "-s", str(tmp_path / "state"), str(conf)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    rotated = Path(str(inst.maillog) + ".1")
    assert "daemon started" in rotated.read_text()
    assert inst.maillog.stat().st_mode & 0o777 == mode
    wait_until(lambda: re.search(rb"master\[\d+\]: reload",
                                 inst.maillog.read_bytes()),
               timeout=20, what="master's reload line in the new maillog")
    # The smtpd from before the reload may still take a connection until it
    # has retired (it logs to the file it opened: maillog.1); wait for it.
    wait_until(lambda: not pid_alive(old_smtpd), timeout=30,
               what="the smtpd from before the reload to retire")
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=10) as s:
        s.noop()
    wait_until(lambda: re.search(rb"smtpd\[\d+\]: connect from",
                                 inst.maillog.read_bytes()),
               timeout=20, what="a new smtpd's line in the new maillog")
    assert b"daemon started" not in inst.maillog.read_bytes()


@pytest.mark.parametrize("group", ["nogroup", "no-such-group-sluice"])
def test_sendmail_keeps_its_setgid_bit_across_installs(tmp_path, group):
    """make install run by root installs sendmail setgid to SETGID_GROUP
    when that group exists (mode 2755, every time: before, each install
    left it 0755 and ordinary users' sendmail and mailq stopped working);
    without the group it installs 0755 and says how to set the bit."""
    import grp
    if os.geteuid() != 0:
        pytest.skip("only root can install a program setgid to a group")
    if group == "nogroup":
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            pytest.skip("this machine has no group nogroup")
    r = run_make("-C", "sendmail", "-f", "Makefile.in", "install",
                 "DESTDIR=%s" % tmp_path, "PREFIX=/usr",
                 "SETGID_GROUP=%s" % group, cwd=TOP)
    st = (tmp_path / "usr" / "bin" / "sendmail").stat()
    if group == "nogroup":
        assert st.st_mode & 0o7777 == 0o2755, oct(st.st_mode)
        assert st.st_gid == gid
    else:
        assert st.st_mode & 0o7777 == 0o755, oct(st.st_mode)
        assert "chmod 2755" in r.stdout and group in r.stdout, r.stdout
