"""test_virtual_mailbox - virtual mailbox hosting (issue 24 item 6):
virtual_mailbox_domains, virtual_mailbox_maps, virtual_mailbox_base,
virtual_uid_maps / virtual_gid_maps, virtual_minimum_uid and the `virtual`
delivery agent, over real SMTP and sendmail(1)

One instance made by root (its daemons run as nobody; virtual, like
local, keeps root only to become each mailbox's ids) hosts box.test and
catch.test. The client is not in mynetworks, so an accepted RCPT also
proves that a virtual mailbox domain is a destination of ours. The uids
and gids are numeric ids that no account has (5000...; no account is
made). Proven here:

- a Maildir (value ending in /) and an mbox file are written under the
  base with the uid and gid the maps give (per address, per @domain,
  static:N), their folders made on the way; the message has Delivered-To;
- smtpd refuses an address the maps lack (550 5.1.1 User unknown in
  virtual mailbox table) and takes a catch-all's and a virtual alias's;
- the same unknown address submitted through sendmail bounces at delivery
  (relay=virtual, 5.1.1), the DSN reaching the sender's virtual Maildir;
- a mailbox path that leaves the base ("..", absolute), a uid below
  virtual_minimum_uid and a symbolic link below the base are refused with
  a clear reason: the mail waits in the queue and nothing is written
  outside.
"""

import os
import re
import shutil
import smtplib
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import BIN, LIBEXEC, Instance, free_port, require, wait_until

DAEMONS = ("master", "smtpd", "cleanup", "qmgr", "bounce", "local", "virtual")
GID = 6000

MAILBOXES = """\
ann@box.test     box.test/ann/
bob@box.test     box.test/bob
low@box.test     box.test/low/
evil@box.test    box.test/../../escape/
abs@box.test     {outside}/abs/
link@box.test    box.test/link/inner/
@catch.test      catch.test/all/
"""

UIDS = """\
bob@box.test     5001
low@box.test     5
@box.test        5000
@catch.test      5002
"""

ALIASES = """\
sales@box.test   ann@box.test
"""


def need_root_and_daemons():
    if os.geteuid() != 0:
        pytest.skip("virtual delivery as other uids needs root")
    require(*(LIBEXEC / d for d in DAEMONS), BIN / "sendmail")


def table(inst, folder, name, text):
    path = Path(folder) / name
    path.write_text(text)
    inst.check("map", "hash:%s" % path)
    return "hash:%s" % path


@pytest.fixture(scope="module")
def env():
    """(instance, base, outside): one instance for the module."""
    need_root_and_daemons()
    top = Path(tempfile.mkdtemp(prefix="sluice-vm-", dir="/tmp"))
    os.chmod(top, 0o755)
    base = top / "vmail"
    base.mkdir()
    os.chmod(base, 0o1777)          # every virtual uid may make its folder
    outside = top / "outside"
    outside.mkdir()
    os.chmod(outside, 0o1777)       # writable by all: only refusal keeps it empty
    (base / "box.test").mkdir()
    os.chmod(base / "box.test", 0o1777)
    os.symlink(outside, base / "box.test" / "link")
    inst = Instance(top / "i0", free_port())
    try:
        inst.init()
        inst.conf_set(
            mynetworks="192.0.2.0/24",
            virtual_mailbox_domains="box.test, catch.test",
            virtual_mailbox_maps=table(inst, top, "vmailbox",
                                       MAILBOXES.format(outside=outside)),
            virtual_mailbox_base=str(base),
            virtual_uid_maps=table(inst, top, "vuid", UIDS),
            virtual_gid_maps="static:%d" % GID,
            virtual_alias_maps=table(inst, top, "valias", ALIASES))
        assert inst.conf_get("disable_dns_lookups") == "yes"
        inst.start()
        yield inst, base, outside
    finally:
        complaint = inst.shutdown()
        if complaint is None:
            shutil.rmtree(top, ignore_errors=True)
        else:
            print("instance kept under %s: %s" % (top, complaint))


def message(tag, to="someone@box.test"):
    return (b"From: s@client.test\r\nTo: %s\r\nSubject: virtual\r\n"
            b"Message-ID: <%d@client.test>\r\n\r\n%s\r\n"
            % (to.encode(), time.monotonic_ns(), tag))


def send(inst, rcpts, tag, sender="s@client.test"):
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=30) as client:
        client.ehlo("client.test")
        code, text = client.mail(sender)
        assert code == 250, text
        for r in rcpts:
            code, text = client.rcpt(r)
            assert code == 250, (r, text)
        code, text = client.data(message(tag, rcpts[0]))
        assert code == 250, text


def maildir_file(folder, tag):
    """The one file in folder/new that holds tag, or None."""
    try:
        found = [p for p in (folder / "new").iterdir()
                 if tag in p.read_bytes()]
    except FileNotFoundError:
        return None
    return found[0] if len(found) == 1 else None


def owner(path):
    st = os.lstat(path)
    return st.st_uid, st.st_gid


def test_maildir_with_uid_and_gid(env):
    inst, base, _ = env
    send(inst, ["ann@box.test"], b"maildir-ann")
    got = wait_until(lambda: maildir_file(base / "box.test" / "ann",
                                          b"maildir-ann"), 20, what="ann's mail")
    assert owner(got) == (5000, GID)
    for folder in ("", "new", "cur", "tmp"):
        assert owner(base / "box.test" / "ann" / folder) == (5000, GID)
    text = got.read_text()
    assert text.startswith("Delivered-To: ann@box.test\nReturn-Path: "
                           "<s@client.test>\n")
    inst.wait_log(r"to=<ann@box.test>, relay=virtual, .*status=sent "
                  r"\(delivered to maildir\)")


def test_mbox_with_uid_and_gid(env):
    inst, base, _ = env
    box = base / "box.test" / "bob"
    send(inst, ["bob@box.test"], b"mbox-bob-1")
    wait_until(lambda: box.exists() and b"mbox-bob-1" in box.read_bytes(),
               20, what="bob's mbox")
    send(inst, ["bob@box.test"], b"mbox-bob-2")
    wait_until(lambda: b"mbox-bob-2" in box.read_bytes(), 20,
               what="bob's second message")
    assert owner(box) == (5001, GID)
    assert os.stat(box).st_mode & 0o777 == 0o600
    text = box.read_text()
    assert len(re.findall(r"^From s@client\.test ", text, re.M)) == 2
    assert "Delivered-To: bob@box.test\n" in text
    inst.wait_log(r"to=<bob@box.test>, relay=virtual, .*status=sent "
                  r"\(delivered to mailbox\)", count=2)


def test_unknown_user_refused_at_rcpt(env):
    inst, _, _ = env
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=30) as client:
        client.ehlo("client.test")
        assert client.mail("s@client.test")[0] == 250
        code, text = client.rcpt("ghost@box.test")
        assert code == 550, text
        assert b"5.1.1" in text
        assert b"User unknown in virtual mailbox table" in text
        # A domain that is neither ours nor listed is still not relayed.
        code, text = client.rcpt("x@elsewhere.test")
        assert code == 554, text
        # Known, catch-all and alias addresses pass.
        for rcpt in ("ann@box.test", "anyone@catch.test", "sales@box.test"):
            code, text = client.rcpt(rcpt)
            assert code == 250, (rcpt, text)


def test_unknown_user_via_sendmail_bounces(env):
    inst, base, _ = env
    body = message(b"sendmail-ghost", "ghost@box.test").replace(b"\r\n",
                                                                  b"\n")
    r = subprocess.run([str(BIN / "sendmail"), "-C", str(inst.dir),
                        "-f", "ann@box.test", "ghost@box.test"],
                       input=body, capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    inst.wait_log(r"to=<ghost@box.test>, relay=virtual, .*dsn=5\.1\.1, "
                  r"status=bounced \(User unknown in virtual mailbox table\)",
                  timeout=20)
    # The DSN goes back to the sender, itself a virtual mailbox.
    dsn = wait_until(lambda: maildir_file(base / "box.test" / "ann",
                                          b"ghost@box.test"), 20,
                     what="the DSN in ann's Maildir")
    text = dsn.read_text()
    assert "MAILER-DAEMON" in text or "<>" in text
    assert "User unknown in virtual mailbox table" in text


def test_catchall(env):
    inst, base, _ = env
    send(inst, ["whoever@catch.test"], b"catch-all")
    got = wait_until(lambda: maildir_file(base / "catch.test" / "all",
                                          b"catch-all"), 20,
                     what="the catch-all's mail")
    assert owner(got) == (5002, GID)
    assert got.read_text().startswith("Delivered-To: whoever@catch.test\n")


def test_alias_to_virtual_mailbox(env):
    inst, base, _ = env
    send(inst, ["sales@box.test"], b"alias-sales")
    got = wait_until(lambda: maildir_file(base / "box.test" / "ann",
                                          b"alias-sales"), 20,
                     what="sales@ in ann's Maildir")
    assert owner(got) == (5000, GID)
    assert got.read_text().startswith("Delivered-To: ann@box.test\n")


def queued_for(inst, rcpt):
    """Is a message for rcpt still in the queue (deferred)?"""
    r = inst.command("queue")
    return rcpt in r.stdout


def test_refused_mailboxes_wait(env):
    """A path leaving the base, an absolute one, a uid below
    virtual_minimum_uid and a symbolic link below the base: deferred with
    the reason, nothing written outside, the mail still queued."""
    inst, base, outside = env
    cases = {
        "evil@box.test": r"mail system configuration error: mailbox "
                         r"\"box\.test/\.\./\.\./escape/\" in "
                         r"virtual_mailbox_maps leaves virtual_mailbox_base",
        "abs@box.test": r"is not a path relative to virtual_mailbox_base",
        "low@box.test": r"bad virtual_uid_maps \"5\" for low@box\.test "
                        r"\(at least 100\)",
        "link@box.test": r"box\.test/link is a symbolic link: not followed",
    }
    send(inst, list(cases), b"refused")
    for rcpt, reason in cases.items():
        inst.wait_log(r"to=<%s>, relay=virtual, .*dsn=4\.\d\.\d, "
                      r"status=deferred \(.*%s" % (re.escape(rcpt), reason),
                      timeout=20)
    assert list(outside.iterdir()) == []
    assert not (base.parent / "escape").exists()
    assert not (base / "box.test" / "low").exists()
    assert queued_for(inst, "evil@box.test")


def test_check_warns_domain_in_both(make_instance):
    """sluice check warns, as Postfix does, of a domain listed in both
    mydestination and virtual_mailbox_domains (mydestination wins: its
    mailboxes would never be used); a domain in one list only is fine."""
    inst = make_instance(params={
        "mydestination": "local.test, both.test",
        "virtual_mailbox_domains": "box.test, both.test"})
    r = inst.command("check")
    assert r.returncode == 0, r.stderr
    assert re.search(r"warning: do not list domain both\.test in BOTH "
                     r"mydestination and virtual_mailbox_domains", r.stderr), \
        r.stderr
    assert "box.test" not in r.stderr and "local.test" not in r.stderr


def test_virtual_mailbox_domain_routes_to_virtual(make_instance, tmp_path):
    """Without a virtual service in master.cf, a recipient of a virtual
    mailbox domain waits ("mail transport unavailable"): qmgr routed it to
    virtual_transport, not to smtp or local."""
    need_root_and_daemons()
    base = tmp_path / "vmail"
    base.mkdir()
    inst = make_instance(params={
        "mynetworks": "127.0.0.0/8",
        "virtual_mailbox_domains": "box.test",
        "virtual_mailbox_maps": "inline:{ann@box.test=box.test/ann/}",
        "virtual_mailbox_base": str(base),
        "virtual_uid_maps": "static:5000",
        "virtual_gid_maps": "static:5000"})
    inst.remove_service("virtual")      # sluice init wrote it
    inst.start()
    send(inst, ["ann@box.test"], b"no-virtual-service")
    inst.wait_log(r"to=<ann@box.test>, relay=none, .*status=deferred "
                  r"\(mail transport unavailable\)", timeout=20)


def test_virtual_mailbox_limit(make_instance, tmp_path):
    """virtual_mailbox_limit bounds a Maildir message and an mbox file:
    past it the recipient is returned (5.2.3, 5.2.2) and nothing is
    written; below it the mail goes in."""
    need_root_and_daemons()
    base = tmp_path / "vmail"
    base.mkdir()
    os.chmod(base, 0o1777)
    inst = make_instance(params={
        "mynetworks": "127.0.0.0/8",
        "virtual_mailbox_domains": "box.test",
        "virtual_mailbox_maps": "inline:{md@box.test=md/, mb@box.test=mb}",
        "virtual_mailbox_base": str(base),
        "virtual_uid_maps": "static:5000",
        "virtual_gid_maps": "static:%d" % GID,
        "virtual_mailbox_limit": "3000"})
    inst.start()
    send(inst, ["md@box.test", "mb@box.test"], b"small")
    wait_until(lambda: maildir_file(base / "md", b"small"), 20,
               what="the small message in the Maildir")
    wait_until(lambda: (base / "mb").exists()
               and b"small" in (base / "mb").read_bytes(), 20,
               what="the small message in the mbox")
    size = (base / "mb").stat().st_size
    send(inst, ["md@box.test", "mb@box.test"], b"big" + b"x" * 4000)
    inst.wait_log(r"to=<md@box.test>, relay=virtual, .*dsn=5\.2\.3, "
                  r"status=bounced \(message is larger than the mailbox "
                  r"size limit \(3000 bytes\)\)", timeout=20)
    inst.wait_log(r"to=<mb@box.test>, relay=virtual, .*dsn=5\.2\.2, "
                  r"status=bounced \(cannot update mailbox .*mailbox full",
                  timeout=20)
    assert len(list((base / "md" / "new").iterdir())) == 1
    assert (base / "mb").stat().st_size == size
