"""Lookup tables from the command line: `sluice map` (build, -q, -d, exit
codes, bad lines), atomic rebuilds under a querying reader, and newaliases
/ `sendmail -bi` building an instance's alias_database."""

import os
import random
import struct
import subprocess
import threading

import pytest

from conftest import BIN, SLUICE, require

pytestmark = pytest.mark.usefixtures("built")


@pytest.fixture
def built():
    require(SLUICE)


def smap(*args, env=None):
    """Run `sluice map args`; the CompletedProcess."""
    return subprocess.run([str(SLUICE), "map"] + [str(a) for a in args],
                          capture_output=True, text=True, timeout=60, env=env)


def write(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize("kind", ["hash", "btree"])
def test_build_query_and_exit_codes(tmp_path, kind):
    table = write(tmp_path / "access", "# comment\n"
                  "Example.TEST   OK\n"
                  "user@x.test    REJECT no  such user\n"
                  "spaced         a value\n"
                  "   continued\n")
    spec = "%s:%s" % (kind, table)
    r = smap(spec)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "" and r.stderr == ""
    assert (tmp_path / "access.db").exists()
    assert [p.name for p in tmp_path.iterdir() if ".tmp." in p.name] == []

    r = smap("-q", "example.test", spec)
    assert (r.returncode, r.stdout) == (0, "OK\n")
    r = smap("-q", "USER@X.test", spec)
    assert (r.returncode, r.stdout) == (0, "REJECT no  such user\n")
    r = smap("-q", "spaced", spec)
    assert (r.returncode, r.stdout) == (0, "a value continued\n")

    r = smap("-q", "absent.test", spec)
    assert (r.returncode, r.stdout, r.stderr) == (1, "", "")

    r = smap("-q", "x", "%s:%s" % (kind, tmp_path / "nothing"))
    assert r.returncode == 2 and r.stdout == ""
    assert "nothing.db" in r.stderr and "No such file" in r.stderr

    for bad in (["-q"], ["-z", spec], [], [spec, spec], ["-q", "a", "-d", "b", spec]):
        r = smap(*bad)
        assert r.returncode == 2, bad
        assert "usage" in r.stderr

    r = smap("-q", "x", "nosuch:%s" % table)
    assert r.returncode == 2 and '"nosuch"' in r.stderr


def test_other_types_query(tmp_path):
    text = write(tmp_path / "plain", "Key value\n")
    r = smap("-q", "KEY", "texthash:%s" % text)
    assert (r.returncode, r.stdout) == (0, "value\n")
    pat = write(tmp_path / "pat", "/^(.*)@old\\.test$/ $1@new.test\n"
                "!/\\.test$/ not-test\n")
    r = smap("-q", "Joe@OLD.test", "pcre:%s" % pat)
    assert (r.returncode, r.stdout) == (0, "Joe@new.test\n")
    r = smap("-q", "a@b.example", "regexp:%s" % pat)
    assert (r.returncode, r.stdout) == (0, "not-test\n")
    r = smap("-q", "a@b.test", "pcre:%s" % pat)
    assert r.returncode == 1
    r = smap("-q", "anything", "static:{ all the same }")
    assert (r.returncode, r.stdout) == (0, "all the same\n")
    r = smap("-q", "b", "inline:{ a=1, { b = two, words } }")
    assert (r.returncode, r.stdout) == (0, "two, words\n")
    r = smap("-q", "root", "unix:passwd.byname")
    assert r.returncode == 0 and r.stdout.startswith("root:")
    # Only hash and btree are built.
    r = smap("texthash:%s" % text)
    assert r.returncode == 2 and "cannot build" in r.stderr
    bad = write(tmp_path / "badpat", "/ok/ 1\n/(unclosed/ 2\n")
    r = smap("-q", "x", "pcre:%s" % bad)
    assert r.returncode == 2 and "badpat line 2" in r.stderr


def test_alias_syntax(tmp_path):
    aliases = write(tmp_path / "aliases", "postmaster: root\n"
                    "team: a@x.test,\n"
                    "      b@x.test\n")
    spec = "hash:%s" % aliases
    r = smap("-a", spec)
    assert r.returncode == 0, r.stderr
    assert smap("-q", "team", spec).stdout == "a@x.test, b@x.test\n"
    # Without -a the ':' is part of the key.
    r = smap(spec)
    assert r.returncode == 0, r.stderr
    assert smap("-q", "postmaster:", spec).stdout == "root\n"
    write(aliases, "postmaster: root\n\nno colon\n")
    r = smap("-a", spec)
    assert r.returncode == 2
    assert "aliases line 3" in r.stderr and "':'" in r.stderr


def test_bad_line_keeps_old_table(tmp_path):
    table = write(tmp_path / "t", "a 1\nb 2\n")
    spec = "hash:%s" % table
    assert smap(spec).returncode == 0
    write(table, "a new\n# two\n\nlonely\nb new\n")
    r = smap(spec)
    assert r.returncode == 2
    assert "%s line 4" % table in r.stderr and "lonely" in r.stderr
    assert smap("-q", "a", spec).stdout == "1\n"
    assert [p.name for p in tmp_path.iterdir() if ".tmp." in p.name] == []


def test_duplicate_key_warns_and_keeps_first(tmp_path):
    table = write(tmp_path / "t", "a first\nb x\nA second\n")
    spec = "btree:%s" % table
    r = smap(spec)
    assert r.returncode == 0
    assert "line 3: duplicate key a: ignored" in r.stderr
    assert smap("-q", "a", spec).stdout == "first\n"


def test_delete(tmp_path):
    text = "a 1\nb 2\nc 3\n"
    table = write(tmp_path / "t", text)
    spec = "hash:%s" % table
    assert smap(spec).returncode == 0
    r = smap("-d", "B", spec)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    assert smap("-q", "b", spec).returncode == 1
    assert smap("-q", "c", spec).stdout == "3\n"
    assert smap("-d", "b", spec).returncode == 1
    assert table.read_text() == text          # the text file is not touched
    r = smap("-d", "a", "texthash:%s" % table)
    assert r.returncode == 2
    assert "-d" in smap().stderr and "not the text" in smap().stderr


def test_unreadable_table_is_tempfail(tmp_path):
    table = write(tmp_path / "t", "".join("key%d value%d\n" % (i, i)
                                          for i in range(3000)))
    spec = "hash:%s" % table
    assert smap(spec).returncode == 0
    db = tmp_path / "t.db"
    data = db.read_bytes()
    page_size = struct.unpack("<I", data[20:24])[0]
    with open(db, "r+b") as f:
        f.seek(page_size)                      # keep the meta page only
        f.write(b"\x5a" * (len(data) - page_size))
    # Berkeley DB cannot free a handle that hit a corrupt page: tell
    # LeakSanitizer (SANITIZE=1 builds) that this leak is libdb's.
    supp = write(tmp_path / "lsan.supp", "leak:libdb-5.3.so\n")
    env = dict(os.environ)
    opts = env.get("LSAN_OPTIONS", "")
    env["LSAN_OPTIONS"] = (opts + ":" if opts else "") + \
        "suppressions=%s:print_suppressions=0" % supp
    r = smap("-q", "key5", spec, env=env)
    assert r.returncode == 75
    assert r.stdout == "" and "try again later" in r.stderr


def test_rebuild_while_reading(tmp_path):
    """Readers that open the table while it is rebuilt again and again
    always find every key: the rename leaves no window."""
    n = 20000
    table = tmp_path / "big"
    spec = "hash:%s" % table

    def content(gen):
        return "".join("key%d gen%d-%d\n" % (i, gen, i) for i in range(n))

    write(table, content(0))
    assert smap(spec).returncode == 0
    stop = threading.Event()
    errors = []

    def rebuild():
        gen = 1
        while not stop.is_set():
            write(table, content(gen))
            r = smap(spec)
            if r.returncode != 0:
                errors.append("build: %s" % r.stderr)
            gen += 1

    builder = threading.Thread(target=rebuild)
    builder.start()
    rng = random.Random(5)
    seen = set()
    queries = 0
    try:
        # At least 150 queries, and on until two generations were seen (a
        # slow machine builds slowly), within reason.
        while queries < 150 or (len(seen) < 2 and queries < 3000):
            queries += 1
            i = rng.randrange(n)
            r = smap("-q", "key%d" % i, spec)
            assert r.returncode == 0, "key%d missing: %s" % (i, r.stderr)
            gen, sep, num = r.stdout.strip().partition("-")
            assert sep and num == str(i), r.stdout
            seen.add(gen)
    finally:
        stop.set()
        builder.join()
    assert not errors
    assert len(seen) > 1, "no rebuild happened while reading"


def test_newaliases_and_sendmail_bi(instance):
    require(BIN / "newaliases", BIN / "sendmail")
    aliases = instance.dir / "aliases"
    write(aliases, "# instance aliases\nPostmaster: root\n"
          "team: a@x.test,\n  b@x.test\n")
    spec = "hash:%s" % aliases
    instance.conf_set(alias_database="%s, texthash:%s" % (spec, aliases),
                      alias_maps=spec)
    env = dict(os.environ)
    env.pop("SLUICE_CONFIG", None)

    r = subprocess.run([str(BIN / "newaliases"), "-C", str(instance.dir)],
                       capture_output=True, text=True, timeout=60, env=env)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    assert smap("-q", "postmaster", spec).stdout == "root\n"
    assert smap("-q", "team", spec).stdout == "a@x.test, b@x.test\n"

    write(aliases, "postmaster: admin@x.test\n")
    env["SLUICE_CONFIG"] = str(instance.dir)
    r = subprocess.run([str(BIN / "sendmail"), "-bi"], capture_output=True,
                       text=True, timeout=60, env=env)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    assert smap("-q", "postmaster", spec).stdout == "admin@x.test\n"
    assert smap("-q", "team", spec).returncode == 1

    write(aliases, "postmaster: root\nbroken line\n")
    r = subprocess.run([str(BIN / "sendmail"), "-bi"], capture_output=True,
                       text=True, timeout=60, env=env)
    assert r.returncode == 78
    assert "aliases line 2" in r.stderr
    assert smap("-q", "postmaster", spec).stdout == "admin@x.test\n"
