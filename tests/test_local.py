"""test_local - the local delivery agent on real instances

Two instances for the whole module: one delivers to Maildirs (the `sluice
init` default) with aliases, :include:, |command, /file, .forward and a
remote Sink as relayhost for what is forwarded and for DSNs; the other
delivers to mbox files (mail_spool_directory without a trailing '/'), for
the mbox format and for many local processes appending to one mbox at once.
Each test uses its own local parts, so the tests do not see each other's
mail.

The review fixes of issue 5 have tests here too: .forward files that are
not safe to obey (world-writable, another user's, another user's home in
an instance), alias duplicates reached by two paths, a command that closes
its output early and must still get a large message whole, a FIFO as a
/file destination and as a mailbox (deferred, no hang), a self-including
:include: file and the cap on destinations per recipient.
"""

import os
import pwd
import re
import shutil
import smtplib
import tempfile
from pathlib import Path

import pytest

from conftest import (Instance, LIBEXEC, free_port, require, smtp_queue,
                      wait_until)

DAEMONS = ("master", "smtpd", "cleanup", "qmgr", "smtp", "bounce", "local")
SENDER = "sender@remote.test"
CROWD = 20                                      # messages into one mbox


def need_daemons():
    require(*(LIBEXEC / d for d in DAEMONS))


ALIASES = """\
# test aliases
postmaster: root
team: tom, tina, far@remote.test
list: :include:{base}/list.inc
badinc: :include:{base}/bad.inc
cmd: "|cat > {base}/cmd.out"
filer: {base}/file.mbox
loopa: loopb
loopb: loopa
selfish: selfish, selfcopy@remote.test
all1: tom1, team1
team1: tom1
all2: staff2, ops2
ops2: staff2
staff2: bob2@remote.test
bigcmd: "|exec cat > {base}/big.out 2>/dev/null"
fifofile: {base}/fifo
selfinc: :include:{base}/selfinc.inc
capper: :include:{base}/cap.inc
"""

# forward_path's second entry climbs from $home to / (extra ".." stay at
# /), so it names a file under base only when $home is known.
HOME_FORWARD = "$home" + "/.." * 8 + "{base}/fwd/home-$user"
# Who the instance runs as: we, or nobody for an instance that root makes
# (no sluice daemon runs as root).
ME = "nobody" if os.getuid() == 0 else pwd.getpwuid(os.getuid()).pw_name
OTHER = "daemon"                        # a passwd user that is not us
FOREIGN_UID = 1                         # daemon: owns the foreign .forward


def start_instance(base, name, sink, params, setup=None):
    """An instance under base/name relaying to sink, started."""
    inst = Instance(base / name, free_port(),
                    relayhost="[127.0.0.1]:%d" % sink.port)
    inst.init()
    if setup:
        setup(inst)
    inst.conf_set(**params)
    assert inst.conf_get("disable_dns_lookups") == "yes"
    inst.start()
    return inst


@pytest.fixture(scope="module")
def env():
    """(maildir instance, mbox instance, sink, base folder)."""
    need_daemons()
    import sink as sink_mod
    sink = sink_mod.Sink()
    base = Path(tempfile.mkdtemp(prefix="sluice-lo-", dir="/tmp"))
    os.chmod(base, 0o1777)            # the daemons run as nobody under root
    made = []

    def aliases(inst):
        (inst.dir / "aliases").write_text(ALIASES.format(base=base))
        inst.check("map", "-a", "hash:%s" % (inst.dir / "aliases"))

    try:
        (base / "list.inc").write_text("ivan\n# a comment\nirene\n")
        (base / "bad.inc").write_text('"|touch %s/bad.out"\n' % base)
        (base / "fwd").mkdir()
        (base / "fwd" / "frank").write_text("frank-away@remote.test, \\frank\n")
        (base / "fwd" / "wwuser").write_text("ww-away@remote.test\n")
        (base / "fwd" / "wwuser").chmod(0o666)
        (base / "fwd" / "foreigner").write_text("foreign-away@remote.test\n")
        if os.getuid() == 0:
            os.chown(base / "fwd" / "foreigner", FOREIGN_UID, FOREIGN_UID)
        (base / "fwd" / ("home-" + OTHER)).write_text(
            "other-away@remote.test\n")
        (base / "fwd" / ("home-" + ME)).write_text("me-away@remote.test\n")
        os.mkfifo(base / "fifo")
        os.chmod(base / "fifo", 0o666)   # local may run as nobody
        (base / "selfinc.inc").write_text(
            ":include:{0}/selfinc.inc\n:include:{0}/selfinc.inc\nsam\n"
            .format(base))
        (base / "cap.inc").write_text("capper-far@remote.test\n" * 1001)
        made.append(start_instance(base, "md", sink, {
            "mynetworks": "127.0.0.0/8",
            "forward_path": "%s/fwd/$user, %s" % (
                base, HOME_FORWARD.format(base=base))}, setup=aliases))
        (base / "spool").mkdir()
        os.chmod(base / "spool", 0o1777)
        os.mkfifo(base / "spool" / "fifouser")
        os.chmod(base / "spool" / "fifouser", 0o666)   # local may run as nobody
        made.append(start_instance(base, "mb", sink, {
            "mynetworks": "127.0.0.0/8",
            "mail_spool_directory": str(base / "spool")}))
        yield made[0], made[1], sink, base
    finally:
        complaints = [c for c in (inst.shutdown() for inst in made) if c]
        sink.stop()
        if not complaints:
            shutil.rmtree(base, ignore_errors=True)
        else:
            print("instances kept under %s: %s" % (base, complaints))


def send(inst, rcpts, body, sender=SENDER):
    """One message over SMTP; every recipient must be accepted."""
    smtp_queue(inst, sender, rcpts, body)


def maildir_files(inst, user, count, timeout=20):
    """Wait until the Maildir of user holds count messages in new/."""
    new = inst.dir / "mail" / user / "new"

    def files():
        found = sorted(new.iterdir()) if new.is_dir() else []
        return found if len(found) >= count else None
    return wait_until(files, timeout, what="%d message(s) in %s" % (count, new))


def sink_for(sink, rcpt, timeout=20):
    """The messages the sink got for rcpt (waits for the first)."""
    def found():
        return [m for m in sink.received() if rcpt in m.rcpt_tos]
    return wait_until(found, timeout, what="a message for %s at the sink" % rcpt)


def dsn_for(sink, needle, timeout=20):
    """A DSN to SENDER at the sink whose text holds needle."""
    def found():
        return [m for m in sink.received()
                if m.mail_from == "" and SENDER in m.rcpt_tos
                and needle in m.data.decode(errors="replace")]
    return wait_until(found, timeout, what="a DSN saying %r" % needle)


def test_maildir_via_smtp(env):
    inst, _, _, _ = env
    send(inst, ["Alice@localhost"], "Subject: hello\n\nFrom me to you\n")
    [path] = maildir_files(inst, "alice", 1)
    text = path.read_text()
    # The address is folded to lower case, as Postfix does.
    assert text.startswith("Delivered-To: alice@localhost\n"
                           "Return-Path: <%s>\n" % SENDER)
    # Maildir keeps the body as it is: no From_ line, no quoting.
    assert "\nFrom me to you\n" in text
    inst.wait_log(r"local\[\d+\]: \w+: to=<alice@localhost>, relay=local, "
                  r"delay=[\d.]+, delays=[\d.]+/[\d.]+/0/[\d.]+, dsn=2\.0\.0, "
                  r"status=sent \(delivered to maildir\)")


def test_alias_fanout_and_forward(env):
    inst, _, sink, _ = env
    send(inst, ["team@localhost"], "Subject: team news\n\nall of you\n")
    maildir_files(inst, "tom", 1)
    maildir_files(inst, "tina", 1)
    [fwd] = sink_for(sink, "far@remote.test")
    assert fwd.mail_from == SENDER
    data = fwd.data.decode()
    assert data.startswith("Delivered-To: team@localhost\r\n") or \
        "\nDelivered-To: team@localhost\r\n" in data
    assert "all of you" in data
    inst.wait_log(r"to=<tom@localhost>, orig_to=<team@localhost>, relay=local"
                  r".*status=sent \(delivered to maildir\)")
    inst.wait_log(r"to=<team@localhost>, relay=local.*status=sent "
                  r"\(forwarded as \w+\)")


def test_include_and_refused_command(env):
    inst, _, sink, base = env
    send(inst, ["list@localhost"], "Subject: list\n\nto the list\n")
    maildir_files(inst, "ivan", 1)
    maildir_files(inst, "irene", 1)

    send(inst, ["badinc@localhost"], "Subject: bad\n\nno commands here\n")
    dsn_for(sink, "mail to command is restricted")
    inst.wait_log(r"to=<badinc@localhost>.*dsn=5\.7\.1, status=bounced "
                  r"\(mail to command is restricted")
    assert not (base / "bad.out").exists()


def test_command_and_file(env):
    inst, _, _, base = env
    send(inst, ["cmd@localhost", "filer@localhost"],
         "Subject: pipes\n\nFrom the pipe\n")
    out = wait_until(lambda: (base / "cmd.out").exists()
                     and "From the pipe" in (base / "cmd.out").read_text()
                     and (base / "cmd.out").read_text(), 20,
                     what="the command's output")
    assert out.startswith("Delivered-To: cmd@localhost\nReturn-Path: <%s>\n"
                          % SENDER)
    inst.wait_log(r"to=<cmd@localhost>, relay=local.*status=sent "
                  r"\(delivered to command: cat > ")
    inst.wait_log(r"to=<filer@localhost>, relay=local.*status=sent "
                  r"\(delivered to file: ")
    mbox = (base / "file.mbox").read_text()
    assert re.match(r"From %s  \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}\n"
                    % re.escape(SENDER), mbox)
    assert "\n>From the pipe\n" in mbox
    assert mbox.endswith("\n\n")


def test_alias_loop_ends(env):
    inst, _, _, _ = env
    send(inst, ["loopa@localhost"], "Subject: loop\n\nround and round\n")
    # a -> b -> a: the second a is not expanded again; a's mailbox gets it.
    maildir_files(inst, "loopa", 1)
    inst.wait_log(r"to=<loopa@localhost>, relay=local.*status=sent")
    assert not (inst.dir / "mail" / "loopb").exists()


def test_self_reference(env):
    inst, _, sink, _ = env
    send(inst, ["selfish@localhost"], "Subject: me\n\nkeep a copy\n")
    maildir_files(inst, "selfish", 1)
    sink_for(sink, "selfcopy@remote.test")


def test_delivered_to_loop_bounces(env):
    inst, _, sink, _ = env
    send(inst, ["looper@localhost"],
         "Delivered-To: LOOPER@localhost\nSubject: again\n\nseen before\n")
    dsn_for(sink, "mail forwarding loop for looper@localhost")
    inst.wait_log(r"to=<looper@localhost>.*dsn=5\.4\.6, status=bounced")
    assert not (inst.dir / "mail" / "looper").exists()


def test_dotforward(env):
    inst, _, sink, _ = env
    send(inst, ["frank@localhost"], "Subject: away\n\nwhere are you\n")
    [fwd] = sink_for(sink, "frank-away@remote.test")
    assert "Delivered-To: frank@localhost" in fwd.data.decode()
    # \frank in the .forward keeps a copy in frank's own mailbox.
    maildir_files(inst, "frank", 1)


def test_mbox_format(env):
    _, inst, _, base = env
    send(inst, ["mary@localhost"], "Subject: mbox\n\nFrom the top\nbye\n")
    path = base / "spool" / "mary"
    text = wait_until(lambda: path.exists() and path.read_text().endswith("\n\n")
                      and path.read_text(), 20, what="mary's mbox")
    lines = text.split("\n")
    assert re.match(r"From %s  \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}$"
                    % re.escape(SENDER), lines[0])
    assert lines[1] == "Delivered-To: mary@localhost"
    assert lines[2] == "Return-Path: <%s>" % SENDER
    assert "\n>From the top\nbye\n\n" in text
    inst.wait_log(r"to=<mary@localhost>, relay=local.*status=sent "
                  r"\(delivered to mailbox\)")


def test_mbox_concurrent_deliveries(env):
    _, inst, _, base = env
    body_lines = 300
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=30) as client:
        for n in range(CROWD):
            body = "Subject: crowd %d\n\n" % n + "".join(
                "message %d line %d\n" % (n, i) for i in range(body_lines))
            client.sendmail(SENDER, ["crowd@localhost"], body)
    hits = inst.wait_log(r"local\[(\d+)\]: \w+: to=<crowd@localhost>.*"
                         r"status=sent", timeout=30, count=CROWD)
    text = (base / "spool" / "crowd").read_text()
    # Parse: each From_ line starts a message whose lines all name it.
    messages = {}
    current = None
    for line in text.split("\n"):
        if line.startswith("From "):
            current = None
            continue
        m = re.match(r"Subject: crowd (\d+)$", line)
        if m:
            current = int(m.group(1))
            assert current not in messages, "message %d twice" % current
            messages[current] = []
            continue
        m = re.match(r"message (\d+) line (\d+)$", line)
        if m:
            assert current is not None and int(m.group(1)) == current, \
                "interleaved: %r inside message %r" % (line, current)
            messages[current].append(int(m.group(2)))
    assert sorted(messages) == list(range(CROWD))
    for n, got in messages.items():
        assert got == list(range(body_lines)), "message %d is not whole" % n
    assert text.count("\nFrom ") + text.startswith("From ") == CROWD
    pids = {h.group(1) for h in hits}
    print("crowd delivered by %d local process(es)" % len(pids))


def removed(inst, rcpt, orig=None):
    """Wait until the message delivered to rcpt (orig_to orig) is removed
    from the queue: every delivery for it is then made and logged."""
    pattern = r"local\[\d+\]: (\w+): to=<%s>" % re.escape(rcpt)
    if orig:
        pattern += r", orig_to=<%s>" % re.escape(orig)
    [hit] = inst.wait_log(pattern, timeout=20)
    inst.wait_log(r"%s: removed$" % hit.group(1), timeout=20)


def test_unsafe_dotforward_ignored(env):
    """A world-writable .forward, or another user's, is not obeyed."""
    inst, _, _, _ = env
    send(inst, ["wwuser@localhost", "foreigner@localhost"],
         "Subject: unsafe\n\nnot through that file\n")
    maildir_files(inst, "wwuser", 1)
    inst.wait_log(r"ignoring \.forward file: .*/fwd/wwuser is group or world "
                  r"writable")
    if os.getuid() == 0:
        maildir_files(inst, "foreigner", 1)
        inst.wait_log(r"ignoring \.forward file: .*/fwd/foreigner is owned by "
                      r"uid %d" % FOREIGN_UID)


def test_home_of_others_unknown(env):
    """In an instance $home is ours only: another user's home is not
    looked into (its .forward would run |commands as us)."""
    inst, _, sink, _ = env
    send(inst, [OTHER + "@localhost"], "Subject: other\n\nyours\n")
    maildir_files(inst, OTHER, 1)
    if os.getuid() != 0:
        # (nobody, who runs root's instance, has no home to climb out of)
        send(inst, [ME + "@localhost"], "Subject: me\n\nmine\n")
        sink_for(sink, "me-away@remote.test")


def test_alias_duplicate_paths(env):
    """all1: tom1, team1; team1: tom1 -> one copy for tom1. all2: staff2,
    ops2; ops2: staff2; staff2: remote -> no mailbox for staff2."""
    inst, _, sink, _ = env
    send(inst, ["all1@localhost"], "Subject: once\n\none copy\n")
    removed(inst, "tom1@localhost", "all1@localhost")
    assert len(maildir_files(inst, "tom1", 1)) == 1
    send(inst, ["all2@localhost"], "Subject: staff\n\nto staff\n")
    [fwd] = sink_for(sink, "bob2@remote.test")
    assert fwd.rcpt_tos == ["bob2@remote.test"]
    removed(inst, "all2@localhost")
    assert not (inst.dir / "mail" / "staff2").exists()
    assert not re.search(r"to=<staff2@localhost>.*status=(bounced|deferred)",
                         inst.log())


def test_command_gets_whole_message(env):
    """A command that redirects its output at once still reads it all."""
    inst, _, _, base = env
    line = "a line of a message larger than any pipe buffer\n"
    body = line * (1536 * 1024 // len(line))
    send(inst, ["bigcmd@localhost"], "Subject: big\n\n" + body)
    inst.wait_log(r"to=<bigcmd@localhost>, relay=local.*status=sent",
                  timeout=30)
    out = (base / "big.out").read_text()
    assert out.endswith(body)
    assert len(out) > len(body)


def test_fifo_destinations_defer(env):
    """A FIFO as a /file destination or as a mailbox: deferred, no hang."""
    inst, mb, _, _ = env
    send(inst, ["fifofile@localhost"], "Subject: fifo\n\npipe dream\n")
    inst.wait_log(r"to=<fifofile@localhost>, relay=local.*status=deferred "
                  r"\(mailbox .*/fifo is not a regular file\)", timeout=20)
    send(mb, ["fifouser@localhost"], "Subject: fifo\n\npipe dream\n")
    mb.wait_log(r"to=<fifouser@localhost>, relay=local.*status=deferred "
                r"\(mailbox .*/spool/fifouser is not a regular file\)",
                timeout=20)
    # local is not stuck: the next message still arrives.
    send(mb, ["after@localhost"], "Subject: after\n\nstill here\n")
    mb.wait_log(r"to=<after@localhost>, relay=local.*status=sent", timeout=20)


def test_include_once_and_cap(env):
    """A file including itself twice is read once; more than 1000
    destinations for one recipient bounce 5.3.0."""
    inst, _, sink, _ = env
    send(inst, ["selfinc@localhost"], "Subject: inc\n\nincluded\n")
    removed(inst, "sam@localhost", "selfinc@localhost")
    assert len(maildir_files(inst, "sam", 1)) == 1
    send(inst, ["capper@localhost"], "Subject: cap\n\ntoo many\n")
    inst.wait_log(r"to=<capper@localhost>, relay=local.*dsn=5\.3\.0, "
                  r"status=bounced \(alias expansion of capper@localhost: "
                  r"more than 1000 destinations\)", timeout=20)
    dsn_for(sink, "more than 1000 destinations")
