"""test_conf - `sluice conf` and `sluice check` (issue 5, item 4)

conf: show (all, -n, -d with type and description), edit in place, refuse a
bad value or one outside the table's bounds; main.cf errors (a bad or
out-of-range value, also for master and the daemons run by hand) and
warnings name the file line. check: a fresh
instance passes; a broken queue directory is repaired and each repair
reported; stray files are reported and left alone; a bad master.cf line
fails with its line; a table that cannot be opened is reported. None of
these instances is started: everything here is the admin command on files.
"""

import grp
import os
import pwd
import re
import stat
import subprocess

import pytest

from conftest import one_line
from tlsca import make_ca


def main_cf_append(inst, text):
    """Append lines to main.cf; returns the line number of the first."""
    before = inst.main_cf.read_text()
    if not before.endswith("\n"):
        before += "\n"
    inst.main_cf.write_text(before + text)
    return before.count("\n") + 1


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


# --- conf -----------------------------------------------------------------

def test_conf_show_and_edit(instance):
    before = instance.main_cf.read_text()
    comments = [l for l in before.splitlines() if l.lstrip().startswith("#")]
    assert comments, "sluice init should write a commented main.cf"

    assert instance.conf_get("queue_directory") == str(instance.dir / "queue")
    instance.conf_set(message_size_limit="20480000")
    assert instance.conf_get("message_size_limit") == "20480000"
    after = instance.main_cf.read_text()
    assert re.search(r"^message_size_limit\s*=\s*20480000\s*$", after, re.M)
    assert [l for l in after.splitlines() if l.lstrip().startswith("#")] == comments

    # editing again changes the line, it does not add a second one
    instance.conf_set(message_size_limit="10m")
    after = instance.main_cf.read_text()
    assert len(re.findall(r"^message_size_limit\s*=", after, re.M)) == 1


def test_conf_n_shows_only_set_parameters(instance):
    out = instance.check("conf", "-n")
    shown = {l.split("=")[0].strip() for l in one_line(out)}
    assert "queue_directory" in shown
    set_in_file = set()
    for line in instance.main_cf.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_]+)\s*=", line)
        if m:
            set_in_file.add(m.group(1))
    assert shown == set_in_file
    # everything (without -n) is a strict superset: defaults are shown too
    everything = {l.split("=")[0].strip() for l in one_line(instance.check("conf"))}
    assert shown < everything
    assert "smtpd_timeout" in everything - shown
    assert len(everything) >= 60
    # main.cf wins over the default in the full listing
    full = dict(l.split(" = ", 1) for l in one_line(instance.check("conf")))
    assert full["queue_directory"] == str(instance.dir / "queue")
    assert full["smtpd_timeout"] == "300s"


@pytest.mark.parametrize("name, default, type_word, words", [
    ("smtpd_timeout", "300s", "time", "smtpd waits for a client"),
    ("message_size_limit", "10240000", "size", "largest message accepted"),
    ("soft_bounce", "no", "boolean", "permanent delivery errors"),
    ("default_process_limit", "100", "integer", "maxproc"),
    ("alias_maps", "hash:/etc/aliases", "list", "local aliases"),
    ("mail_name", "sluice", "string", "name of the mail system"),
])
def test_conf_d_shows_default_type_and_description(instance, name, default,
                                                   type_word, words):
    # main.cf's own setting must not hide the default
    instance.conf_set(**{name: "yes" if type_word == "boolean" else "1"})
    lines = one_line(instance.check("conf", "-d", name))
    assert len(lines) == 2, lines
    assert lines[0] == "%s = %s" % (name, default)
    m = re.match(r"^# (.+?): (.+)$", lines[1])
    assert m, lines[1]
    assert m.group(1).startswith(type_word)
    assert words in m.group(2)


@pytest.mark.parametrize("name,setting", [
    ("myhostname", "host.example.test"),
    ("mydomain", "example.test"),
])
def test_conf_d_runtime_default_is_not_main_cf(instance, name, setting):
    """A default computed at run time is shown as the default, not as
    what main.cf sets."""
    before = one_line(instance.check("conf", "-d", name))[0]
    assert before != "%s = %s" % (name, setting)
    instance.conf_set(**{name: setting})
    assert instance.conf_get(name) == setting
    assert one_line(instance.check("conf", "-d", name))[0] == before


def test_conf_X_removes_settings_and_keeps_the_rest(instance):
    """sluice conf -X (postconf -X): each setting of the names goes, with
    its continuation lines; comments and every other line stay byte for
    byte; main.cf is replaced by rename (a new inode, no temporary file
    left); the value falls back to the default."""
    main_cf_append(instance,
                   "# about relaying\n"
                   "relayhost = [relay.test]:2525\n"
                   "relay_domains = a.test,\n"
                   "    b.test\n"
                   "# a note between\n"
                   "smtpd_banner = hi\n"
                   "relayhost = [again.test]\n")
    before = instance.main_cf.read_text()
    files = sorted(os.listdir(instance.dir))
    with open(instance.main_cf) as old:
        inode = os.fstat(old.fileno()).st_ino
        instance.check("conf", "-X", "relayhost", "relay_domains")
        # Replaced by rename: the file still open is the old one, intact.
        assert old.read() == before
    after = instance.main_cf.read_text()
    want = before.replace("relayhost = [relay.test]:2525\n", "") \
                 .replace("relay_domains = a.test,\n    b.test\n", "") \
                 .replace("relayhost = [again.test]\n", "")
    assert after == want
    assert "# about relaying\n# a note between\nsmtpd_banner = hi\n" in after
    assert os.stat(instance.main_cf).st_ino != inode
    assert sorted(os.listdir(instance.dir)) == files
    assert instance.conf_get("relayhost") == ""
    assert instance.conf_get("relay_domains") == ""
    shown = instance.check("conf", "-n")
    assert "relayhost" not in shown and "relay_domains" not in shown


def test_conf_X_name_not_set_is_a_no_op(instance):
    before = instance.main_cf.read_text()
    inode = os.stat(instance.main_cf).st_ino
    r = instance.command("conf", "-X", "smtpd_banner", "my_own_never_set")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert instance.main_cf.read_text() == before
    assert os.stat(instance.main_cf).st_ino == inode


def test_conf_X_repairs_a_bad_value(instance):
    """A main.cf that programs refuse can still lose the bad setting."""
    main_cf_append(instance, "message_size_limit = lots\n")
    assert instance.command("conf", "message_size_limit").returncode != 0
    instance.check("conf", "-X", "message_size_limit")
    assert instance.conf_get("message_size_limit") == "10240000"


@pytest.mark.parametrize("args,complaint", [
    (["-X"], "-X needs"),
    (["-X", "relayhost=x"], "give only names"),
    (["-X", "bad-name"], "bad-name"),
    (["-X", "-n", "relayhost"], "-X does not go with"),
])
def test_conf_X_refusals_change_nothing(instance, args, complaint):
    main_cf_append(instance, "relayhost = [keep.test]\n")
    before = instance.main_cf.read_text()
    r = instance.command("conf", *args)
    assert r.returncode != 0
    assert complaint in r.stderr
    assert instance.main_cf.read_text() == before


def test_conf_e_is_accepted(instance):
    """postconf -e habit: sluice conf -e name=value edits as without -e."""
    instance.check("conf", "-e", "smtpd_banner=$myhostname ESMTP test",
                   "soft_bounce = yes")
    assert instance.conf_get("smtpd_banner") == "$myhostname ESMTP test"
    assert instance.conf_get("soft_bounce") == "yes"


def test_conf_d_unknown_name_fails(instance):
    r = instance.command("conf", "-d", "smtpd_no_such_thing")
    assert r.returncode != 0
    assert "smtpd_no_such_thing" in r.stderr


def test_unknown_parameter_is_a_warning_with_its_line(instance):
    line = main_cf_append(instance,
                          "# my own\n"
                          "my_helo = hello.test\n"
                          "smtp_helo_name = $my_helo\n"
                          "smtp_destination_concurrency_limit = 3\n"
                          "smtpd_bogus = 1\n")
    want = "main.cf line %d: unknown parameter smtpd_bogus" % (line + 4)
    for args in (("conf",), ("conf", "-n"), ("check",)):
        r = instance.command(*args)
        assert r.returncode == 0, (args, r.stderr)
        warnings = [l for l in one_line(r.stderr) if "unknown parameter" in l]
        assert len(warnings) == 1, (args, r.stderr)
        assert want in warnings[0]
        assert "warning" in warnings[0]
    # the user-defined parameter is used through $my_helo
    assert instance.conf_get("my_helo") == "hello.test"


@pytest.mark.parametrize("name, bad, complaint", [
    ("smtpd_recipient_limit", "lots", "bad number"),
    ("soft_bounce", "maybe", "bad boolean"),
    ("smtpd_timeout", "5 minutes", "bad time"),
    ("message_size_limit", "10x", "bad size"),
])
def test_bad_value_names_parameter_and_line(instance, name, bad, complaint):
    line = main_cf_append(instance, "\n# broken\n%s = %s\n" % (name, bad))
    want = "main.cf line %d: %s: %s" % (line + 2, name, complaint)
    for args in (("conf",), ("check",), ("start",)):
        r = instance.command(*args)
        assert r.returncode == 1, (args, r.stdout, r.stderr)
        assert want in r.stderr, (args, r.stderr)
    assert instance.master_pid() is None


@pytest.mark.parametrize("name, bad", [
    ("smtpd_recipient_limit", "-3"),
    ("disable_vrfy_command", "sometimes"),
    ("queue_run_delay", "5x"),
    ("header_size_limit", "big"),
])
def test_conf_set_refuses_bad_value(instance, name, bad):
    before = instance.main_cf.read_text()
    r = instance.command("conf", "%s=%s" % (name, bad))
    assert r.returncode != 0
    lines = one_line(r.stderr)
    assert len(lines) == 1 and name in lines[0] and bad in lines[0], r.stderr
    assert instance.main_cf.read_text() == before


# Bounds of the parameter table (mail_params.c): a number outside them is
# refused like a value of the wrong type, by every reader of main.cf.
OUT_OF_RANGE = [
    ("smtpd_process_connection_limit", "0", "0 is below the minimum 1"),
    ("smtp_tcp_port", "70000", "70000 is above the maximum 65535"),
    ("smtpd_timeout", "0s", "0s is below the minimum 1s"),
    ("master_backoff_initial", "2h", "2h is above the maximum 3600s"),
    ("line_length_limit", "100", "100 is below the minimum 512"),
]

# The rules qmgr, cleanup, local and smtp used to check by hand, now the
# table's bounds: (the daemon that reads it, name, bad value, complaint,
# the bound itself, which is allowed). Each daemon run by hand refuses to
# start with the bad value and names the line (test_daemon_refuses_...).
MOVED_TO_TABLE = [
    ("qmgr", "qmgr_message_active_limit", "0", "0 is below the minimum 1",
     "1"),
    ("qmgr", "default_destination_recipient_limit", "0",
     "0 is below the minimum 1", "1"),
    ("qmgr", "default_destination_concurrency_limit", "0",
     "0 is below the minimum 1", "1"),
    ("qmgr", "initial_destination_concurrency", "0",
     "0 is below the minimum 1", "1"),
    ("qmgr", "queue_run_delay", "0s", "0s is below the minimum 1s", "1s"),
    # each step of the list; qmgr used to die at start on these, after
    # sluice check and sluice start had passed them
    ("qmgr", "retry_schedule", "1m 0s 1h", "0s is below the minimum 1s",
     "1s, 1s"),
    ("qmgr", "retry_schedule", "1m,5 minutes", 'bad time "minutes"',
     "1s"),
    ("cleanup", "daemon_timeout", "0", "0 is below the minimum 1s", "1s"),
    ("local", "command_time_limit", "0s", "0s is below the minimum 1s",
     "1s"),
    ("local", "command_time_limit", "2147483648s",
     "2147483648s is above the maximum 2147483647s", "2147483647s"),
    ("smtp", "smtp_tcp_port", "0", "0 is below the minimum 1", "1"),
    ("smtp", "smtp_connect_timeout", "0", "0 is below the minimum 1s",
     "1"),
    ("smtp", "smtp_rset_timeout", "100000d",
     "100000d is above the maximum 2147483647s", "2147483647"),
    ("smtp", "ipc_timeout", "0s", "0s is below the minimum 1s", "1s"),
]
OUT_OF_RANGE += [row[1:4] for row in MOVED_TO_TABLE]
GOOD_BOUND = {"smtpd_process_connection_limit": "1", "smtp_tcp_port": "65535",
              "smtpd_timeout": "1s", "master_backoff_initial": "1h",
              "line_length_limit": "512"}


@pytest.mark.parametrize("name, bad, complaint", OUT_OF_RANGE)
def test_out_of_range_value_names_parameter_and_line(instance, name, bad,
                                                     complaint):
    line = main_cf_append(instance, "# too far\n%s = %s\n" % (name, bad))
    want = "main.cf line %d: %s: %s" % (line + 1, name, complaint)
    for args in (("conf",), ("check",), ("start",)):
        r = instance.command(*args)
        assert r.returncode == 1, (args, r.stdout, r.stderr)
        assert want in r.stderr, (args, r.stderr)
    assert instance.master_pid() is None


def test_master_refuses_out_of_range_value(instance):
    """master itself, run without `sluice start`, refuses to start and
    names the line (it reads main.cf on its own)."""
    master = os.path.join(instance.conf_get("daemon_directory"), "master")
    line = main_cf_append(instance, "default_process_limit = 0\n")
    r = subprocess.run(instance._wrap([master, "-c", str(instance.dir), "-f"]),
                       capture_output=True, text=True, timeout=30,
                       env=instance._env())
    assert r.returncode != 0, r.stderr
    want = ("main.cf line %d: default_process_limit: 0 is below the minimum 1"
            % line)
    assert want in r.stderr, r.stderr
    assert instance.master_pid() is None


@pytest.mark.parametrize("name, bounds", [
    ("smtp_tcp_port", "integer, from 1 to 65535"),
    ("smtpd_timeout", "time (number + s, m, h, d or w; default s), at least 1s"),
    ("master_backoff_initial", "from 1s to 3600s"),
    ("smtpd_client_connection_count_limit", "integer"),
    ("retry_schedule", "list of times (comma or space separated), each at "
     "least 1s"),
])
def test_conf_d_shows_bounds(instance, name, bounds):
    lines = one_line(instance.check("conf", "-d", name))
    m = re.match(r"^# (.+?): (.+)$", lines[1])
    assert m, lines
    assert m.group(1).endswith(bounds), lines[1]


@pytest.mark.parametrize("name, bad, complaint", OUT_OF_RANGE)
def test_conf_set_refuses_out_of_range_value(instance, name, bad, complaint):
    before = instance.main_cf.read_text()
    r = instance.command("conf", "%s=%s" % (name, bad))
    assert r.returncode != 0
    lines = one_line(r.stderr)
    assert len(lines) == 1 and "%s: %s" % (name, complaint) in lines[0], r.stderr
    assert instance.main_cf.read_text() == before
    # the bound itself is allowed
    good = GOOD_BOUND.get(name)
    if good is None:
        good = [row[4] for row in MOVED_TO_TABLE
                if row[1] == name and row[2] == bad][0]
    instance.conf_set(**{name: good})
    assert instance.conf_get(name) == good
    instance.check("check")


@pytest.mark.parametrize("daemon, name, bad, complaint, good", MOVED_TO_TABLE)
def test_daemon_refuses_out_of_range_value(instance, daemon, name, bad,
                                           complaint, good):
    """The daemon that used to check the value by hand, run by hand (not by
    master, which `sluice start` keeps from starting at all), exits at once
    naming the parameter and its main.cf line: it reads main.cf through the
    same table."""
    program = os.path.join(instance.conf_get("daemon_directory"), daemon)
    line = main_cf_append(instance, "%s = %s\n" % (name, bad))
    try:
        r = subprocess.run(instance._wrap([program, "-c", str(instance.dir)]),
                           capture_output=True, text=True, timeout=10,
                           stdin=subprocess.DEVNULL, env=instance._env())
    except subprocess.TimeoutExpired:
        pytest.fail("%s started with %s = %s" % (daemon, name, bad))
    assert r.returncode != 0, r.stderr
    want = "main.cf line %d: %s: %s" % (line, name, complaint)
    assert want in r.stderr, r.stderr


# --- check ----------------------------------------------------------------

def table_warning(line):
    """A warning about a table that cannot be opened (the system's
    /etc/aliases may have no .db on a test machine)."""
    return "warning:" in line and "_maps:" in line


def test_check_fresh_instance(instance):
    r = instance.command("check")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() in ("", "ok"), r.stdout
    others = [l for l in one_line(r.stderr) if not table_warning(l)]
    assert others == [], r.stderr


def test_check_repairs_the_queue(instance):
    q = instance.queue_dir
    # mail_owner: ourselves, or nobody for an instance that root made
    owner = pwd.getpwnam(instance.conf_get("mail_owner")).pw_uid
    stranger = 65534 if owner != 65534 else 1
    os.chmod(q / "deferred", 0o777)
    os.rmdir(q / "hold")
    os.chmod(q / "defer" / "A", 0o755)
    os.chown(q / "incoming", stranger, -1)
    r = instance.command("check")
    assert r.returncode == 0, r.stderr
    fixed = one_line(r.stdout)
    assert any("%s: mode 0777 -> 0700" % (q / "deferred") in l for l in fixed), fixed
    assert any("%s: mode 0755 -> 0700" % (q / "defer" / "A") in l for l in fixed), fixed
    assert any("%s: created" % (q / "hold") in l for l in fixed), fixed
    assert any("%s: owner uid %d ->" % (q / "incoming", stranger) in l
               for l in fixed), fixed
    assert all(l.startswith("sluice: fixed: ") for l in fixed), fixed
    assert len(fixed) == 4, fixed

    for sub in ("deferred", "hold", "incoming", "defer/A"):
        assert mode(q / sub) == 0o700, sub
        assert os.lstat(q / sub).st_uid == owner, sub
    assert stat.S_ISDIR(os.lstat(q / "hold").st_mode)

    # repaired: a second run has nothing to fix
    r = instance.command("check")
    assert r.returncode == 0 and r.stdout.strip() in ("", "ok"), r.stdout


def test_check_setgid_group_folders(instance):
    """With setgid_group naming a group that exists, maildrop/ and public/
    are that group's (1730 and 0710: a setgid sendmail submits through
    them, INSTALL); queue_directory itself must only not be writable by
    others, so users can reach maildrop/ through it."""
    group = grp.getgrnam("mail")            # in every Debian base system
    q = instance.queue_dir
    os.chmod(q, 0o777)
    instance.conf_set(setgid_group="mail")
    r = instance.command("check")
    assert r.returncode == 0, r.stderr
    fixed = one_line(r.stdout)
    assert "sluice: fixed: %s: mode 0777 -> 0755" % q in fixed, fixed
    for sub, want in (("maildrop", 0o1730), ("public", 0o710)):
        assert mode(q / sub) == want, sub
        assert os.lstat(q / sub).st_gid == group.gr_gid, sub
        assert "sluice: fixed: %s: mode 0700 -> %04o" % (q / sub, want) in fixed, fixed
    assert mode(q / "incoming") == 0o700
    r = instance.command("check")
    assert r.returncode == 0 and r.stdout.strip() == "", r.stdout

    # a group that does not exist: both are private again
    instance.conf_set(setgid_group="no-such-group-here")
    r = instance.command("check")
    assert r.returncode == 0, r.stderr
    assert mode(q / "maildrop") == 0o700 and mode(q / "public") == 0o700
    assert mode(q) == 0o755, "a queue top of 0755 is left alone"


def test_check_reports_stray_files(instance):
    q = instance.queue_dir
    (q / "incoming" / "junk").write_text("x")
    (q / "deferred" / "notahash").write_text("x")
    # a queue file being written is no stray
    (q / "incoming" / ".tmp.0000000000000001").write_text("x")
    r = instance.command("check")
    assert r.returncode == 0, r.stderr
    strays = [l for l in one_line(r.stderr) if not table_warning(l)]
    assert len(strays) == 2, r.stderr
    assert any(str(q / "incoming" / "junk") in l and "not a queue file" in l
               for l in strays), strays
    assert any(str(q / "deferred" / "notahash") in l for l in strays), strays
    # reported, not removed
    assert (q / "incoming" / "junk").exists()
    assert (q / "deferred" / "notahash").exists()


def master_cf_line_of(inst, text):
    lines = inst.master_cf.read_text().splitlines()
    return lines.index(text) + 1


@pytest.mark.parametrize("service", [
    "bogus      unix  -       -       n       -       -       nosuchprogram",
    "bogus      unix  maybe   -       n       -       -       smtp",
    "bogus      unix  -       -       n       -       lots    smtp",
    "bogus      tcp   -       -       n       -       -       smtp",
])
def test_check_bad_master_cf_line(instance, service):
    instance.add_service(service)
    line = master_cf_line_of(instance, service)
    r = instance.command("check")
    assert r.returncode == 1, r.stderr
    errors = [l for l in one_line(r.stderr) if "error:" in l]
    assert len(errors) == 1, r.stderr
    assert "master.cf line %d:" % line in errors[0]


def test_check_reports_a_missing_hash_table(instance):
    aliases = instance.dir / "more-aliases"   # init built its own aliases.db
    aliases.write_text("postmaster: root\n")
    spec = "hash:%s" % aliases
    instance.conf_set(alias_maps=spec)
    r = instance.command("check")
    assert r.returncode == 0, r.stderr
    warnings = [l for l in one_line(r.stderr) if spec in l]
    assert len(warnings) == 1, r.stderr
    assert "alias_maps" in warnings[0]
    assert "%s.db" % aliases in warnings[0]
    assert "sluice map %s" % spec in warnings[0]

    # once built, the table opens
    r = instance.command("map", "-a", spec)
    assert r.returncode == 0, r.stderr
    r = instance.command("check")
    assert r.returncode == 0 and spec not in r.stderr, r.stderr


def test_check_opens_the_access_tables_of_smtpd(instance):
    """check_*_access tables in smtpd's restriction lists are opened too:
    smtpd would refuse to start without them."""
    senders = instance.dir / "senders"
    senders.write_text("spam@bad.test REJECT\n")
    spec = "hash:%s" % senders
    instance.conf_set(smtpd_sender_restrictions="check_sender_access %s, permit" % spec,
                      smtpd_recipient_restrictions="check_recipient_access")
    r = instance.command("check")
    assert r.returncode == 1, r.stderr
    lines = one_line(r.stderr)
    assert any("smtpd_sender_restrictions" in l and "sluice map %s" % spec in l
               for l in lines), lines
    assert any(l.startswith("sluice: error:") and "smtpd_recipient_restrictions" in l
               and "check_recipient_access needs a table" in l for l in lines), lines

    instance.conf_set(smtpd_recipient_restrictions="")
    assert instance.command("map", spec).returncode == 0
    r = instance.command("check")
    assert r.returncode == 0 and r.stderr == "", r.stderr


def test_check_refuses_an_unknown_restriction(instance):
    """A restriction word smtpd does not implement (Postfix's
    reject_non_fqdn_recipient, say) is an error naming the main.cf line,
    where smtpd would answer 451 to every client that reaches it; Debian's
    stock relay list (defer_unauth_destination) passes."""
    line = main_cf_append(
        instance,
        "smtpd_relay_restrictions = permit_mynetworks,\n"
        "    permit_sasl_authenticated, reject_non_fqdn_recipient\n"
        "smtpd_recipient_restrictions = Permit_MyNetworks, reject\n")
    r = instance.command("check")
    assert r.returncode == 1, (r.stdout, r.stderr)
    errors = [l for l in one_line(r.stderr) if l.startswith("sluice: error:")]
    want = ("sluice: error: %s line %d: smtpd_relay_restrictions: unknown "
            "restriction \"%%s\" (smtpd does not implement it and would "
            "answer 451 where it is met)" % (instance.main_cf, line))
    assert errors == [want % "reject_non_fqdn_recipient"], r.stderr
    # known words in any case pass; nothing else was wrong
    instance.conf_set(smtpd_relay_restrictions="permit_mynetworks "
                      "permit_sasl_authenticated defer_unauth_destination")
    r = instance.command("check")
    assert r.returncode == 0, r.stderr


def test_check_on_debian_stock_main_cf(instance):
    """INSTALL section 6 step 3: Debian 12's stock main.cf (as postfix's
    postinst writes it) passes `sluice check` with warnings only for the
    parameters INSTALL names, each with its line."""
    aliases = instance.dir / "aliases"
    aliases.write_text("postmaster: root\n")
    # ssl-cert's snakeoil pair, made here (a machine without ssl-cert has
    # none, and sluice check warns about a certificate it cannot load)
    snakeoil = make_ca(instance.dir / "ca").issue("debian.test", days=365)
    assert instance.command("map", "hash:%s" % aliases).returncode == 0
    first = main_cf_append(instance, (
        "smtpd_banner = $myhostname ESMTP $mail_name (Debian/GNU)\n"
        "biff = no\n"
        "append_dot_mydomain = no\n"
        "readme_directory = no\n"
        "compatibility_level = 3.6\n"
        "smtpd_tls_cert_file=%s\n"
        "smtpd_tls_key_file=%s\n"
        "smtpd_tls_security_level=may\n"
        "smtp_tls_CApath=/etc/ssl/certs\n"
        "smtp_tls_security_level=may\n"
        "smtp_tls_session_cache_database = "
        "btree:${data_directory}/smtp_scache\n"
        "smtpd_relay_restrictions = permit_mynetworks "
        "permit_sasl_authenticated defer_unauth_destination\n"
        "myhostname = debian.test\n"
        "alias_maps = hash:%s\n"
        "alias_database = hash:%s\n"
        "mydestination = $myhostname, localhost.test, , localhost\n"
        "relayhost =\n"
        "mynetworks = 127.0.0.0/8 [::ffff:127.0.0.0]/104 [::1]/128\n"
        "mailbox_size_limit = 0\n"
        "recipient_delimiter = +\n")
        % (snakeoil.cert, snakeoil.key, aliases, aliases))
    r = instance.command("check")
    lines = [l for l in one_line(r.stderr) if l.startswith("sluice: ")]
    want = ["sluice: warning: %s line %d: unknown parameter %s"
            % (instance.main_cf, first + off, name)
            for off, name in ((1, "biff"), (2, "append_dot_mydomain"),
                              (3, "readme_directory"),
                              (8, "smtp_tls_CApath"),
                              (10, "smtp_tls_session_cache_database"))]
    assert lines == want, r.stderr
    assert r.returncode == 0, r.stderr
