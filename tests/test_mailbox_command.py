"""test_mailbox_command - local delivery through mailbox_command (issue 24
item 6), over real SMTP

mailbox_command names a shell script that records its environment, its
first argument and its standard input, then exits with the status the
user name asks for: 0, EX_TEMPFAIL (75: deferred) or EX_NOUSER (67:
bounced, the DSN reaching the Sink that is relayhost). The command line
carries "$EXTENSION", which must reach the shell unexpanded (Postfix does
not $name-expand mailbox_command). A virtual alias to a local user shows
the address the client used as ORIGINAL_RECIPIENT.
"""

import os
import re
import time

from conftest import LIBEXEC, require, smtp_queue, wait_until

DAEMONS = ("master", "smtpd", "cleanup", "qmgr", "smtp", "bounce", "local")
SENDER = "sender@remote.test"
NAMES = ("HOME", "USER", "SHELL", "LOGNAME", "SENDER", "RECIPIENT",
         "EXTENSION", "DOMAIN", "LOCAL", "ORIGINAL_RECIPIENT")

SCRIPT = """\
#!/bin/sh
out={out}/"$LOCAL"
{{
  for n in {names}; do eval "echo $n=\\${{$n}}"; done
  echo "ARG1=$1"
  echo ---
  cat
}} > "$out.tmp" && mv "$out.tmp" "$out"
case "$USER" in
  tempfail*) exit 75 ;;
  nouser*) exit 67 ;;
esac
exit 0
"""


def make_env(make_instance, make_sink, tmp_path):
    require(*(LIBEXEC / d for d in DAEMONS))
    sink = make_sink()
    out = tmp_path / "out"
    out.mkdir()
    os.chmod(tmp_path, 0o755)
    os.chmod(out, 0o1777)              # local may run as nobody under root
    script = tmp_path / "mc.sh"
    script.write_text(SCRIPT.format(out=out, names=" ".join(NAMES)))
    script.chmod(0o755)
    inst = make_instance(relayhost="[127.0.0.1]:%d" % sink.port)
    inst.conf_set(mynetworks="127.0.0.0/8", recipient_delimiter="+",
                  mailbox_command='%s "$EXTENSION"' % script,
                  virtual_alias_maps="inline:{ va@virt.test=carol@localhost }")
    inst.start()
    return inst, sink, out


def record(out, local):
    path = out / local
    text = wait_until(lambda: path.exists() and path.read_text(), 20,
                      what="the command's record for %s" % local)
    head, _, body = text.partition("---\n")
    env = dict(line.split("=", 1) for line in head.splitlines())
    return env, body


def test_mailbox_command_environment(make_instance, make_sink, tmp_path):
    inst, _, out = make_env(make_instance, make_sink, tmp_path)
    smtp_queue(inst, SENDER, ["bob+ext@localhost"],
               "Subject: mc\n\nthrough the command\n")
    env, body = record(out, "bob+ext")
    assert env["USER"] == "bob" and env["LOGNAME"] == "bob", env
    assert env["LOCAL"] == "bob+ext" and env["EXTENSION"] == "ext", env
    assert env["DOMAIN"] == "localhost", env
    assert env["RECIPIENT"] == "bob+ext@localhost", env
    assert env["ORIGINAL_RECIPIENT"] == "bob+ext@localhost", env
    assert env["SENDER"] == SENDER and env["SHELL"] == "/bin/sh", env
    assert env["HOME"], env
    assert env["ARG1"] == "ext", env     # "$EXTENSION" reached the shell
    assert "Delivered-To: bob+ext@localhost\n" in body, body
    assert body.endswith("\nthrough the command\n"), body
    inst.wait_log(r"to=<bob\+ext@localhost>, relay=local.*status=sent "
                  r"\(delivered to command: ")
    assert not (inst.dir / "mail" / "bob").exists()   # no Maildir


def test_mailbox_command_original_recipient(make_instance, make_sink,
                                            tmp_path):
    inst, _, out = make_env(make_instance, make_sink, tmp_path)
    smtp_queue(inst, SENDER, ["va@virt.test"], "Subject: va\n\nvirtual\n")
    env, _ = record(out, "carol")
    assert env["RECIPIENT"] == "carol@localhost", env
    assert env["ORIGINAL_RECIPIENT"] == "va@virt.test", env


def test_mailbox_command_exit_codes(make_instance, make_sink, tmp_path):
    """EX_TEMPFAIL defers (the message stays queued), EX_NOUSER bounces
    (a DSN to the sender)."""
    inst, sink, out = make_env(make_instance, make_sink, tmp_path)
    smtp_queue(inst, SENDER, ["tempfail@localhost"], "Subject: t\n\nt\n")
    smtp_queue(inst, SENDER, ["nouser@localhost"], "Subject: n\n\nn\n")
    inst.wait_log(r"to=<tempfail@localhost>, relay=local.*dsn=4\.3\.0, "
                  r"status=deferred \(command failed with exit status 75: "
                  r"temporary failure")
    inst.wait_log(r"to=<nouser@localhost>, relay=local.*dsn=5\.1\.1, "
                  r"status=bounced \(command failed with exit status 67: "
                  r"user unknown")

    def dsn():
        return [m for m in sink.received()
                if m.mail_from == "" and m.rcpt_tos == [SENDER]
                and b"nouser@localhost" in m.data]
    wait_until(dsn, 20, what="the DSN for nouser")
    deferred = [p for p in (inst.queue_dir / "deferred").rglob("*")
                if p.is_file()]
    assert len(deferred) == 1, deferred
