"""test_qfile_reader - the tests' one queue-file reader (qfile_reader.py)
against queue files cleanup really writes, and against broken ones

A recipient record is "address\\0orcpt\\0notify": a reader that splits it
at "\\0\\0" (test_bounce's old one) returns "address\\0orcpt" as the address
as soon as the client gave ORCPT= or NOTIFY=.
"""

import pytest

import qfile_reader
from conftest import require, smtp_queue, wait_until, LIBEXEC
from qfile_reader import QfileError


@pytest.fixture
def queued(make_instance):
    """A queue file with DSN recipients in incoming/ (no qmgr takes it)."""
    require(LIBEXEC / "smtpd", LIBEXEC / "cleanup")
    inst = make_instance()
    inst.remove_service("qmgr")
    inst.start()
    qid = smtp_queue(inst, "sender@src.test",
                     ["dsn@dst.test"], b"Subject: t\r\n\r\nbody\r\n",
                     mail_options=["RET=HDRS"],
                     rcpt_options=["NOTIFY=SUCCESS,FAILURE",
                                   "ORCPT=rfc822;orig@dst.test"])
    smtp_queue(inst, "", ["plain@dst.test"], b"Subject: u\r\n\r\nx\r\n")
    path = wait_until(lambda: next(inst.queue_dir.glob("incoming/**/" + qid),
                                   None), 10, what="queue file %s" % qid)
    return path


def test_reads_recipient_fields_of_a_real_queue_file(queued):
    qf = qfile_reader.read(queued)
    assert qf.sender == "sender@src.test"
    [rcpt] = qf.rcpts
    assert (rcpt.address, rcpt.orcpt, rcpt.done) == (
        "dsn@dst.test", "rfc822;orig@dst.test", False)
    assert rcpt.notify.upper() in ("SUCCESS,FAILURE", "FAILURE,SUCCESS")
    assert qf.content.endswith(b"\n\nbody\n")
    assert qf.attrs.get("ret", "").upper() == "HDRS"

    # test_bounce reads notices with it: the address alone
    from test_bounce import read_qfile
    assert read_qfile(queued)["rcpts"] == ["dsn@dst.test"]


def test_refuses_broken_files(queued):
    data = queued.read_bytes()
    qfile_reader.parse(data)
    bounds = qfile_reader.boundaries(data)
    for cut in bounds[1:-1] + [len(data) - 1, 3]:
        with pytest.raises(QfileError):
            qfile_reader.parse(data[:cut])
    with pytest.raises(QfileError):
        qfile_reader.parse(data + qfile_reader.record(b"E"))
    # one more content byte: the SIZE record disagrees
    end = bounds[-2]
    last_c = bounds[-3]
    length = int.from_bytes(data[last_c + 1:last_c + 5], "big") + 1
    grown = (data[:last_c + 1] + length.to_bytes(4, "big") +
             data[last_c + 5:end] + b"x" + data[end:])
    with pytest.raises(QfileError, match="SIZE"):
        qfile_reader.parse(grown)


def test_build_round_trip():
    data = qfile_reader.build(b"a@src.test", [b"b@dst.test", b"c@dst.test"],
                              b"Subject: s\n\nbody\n", attrs=[b"origin=x"])
    qf = qfile_reader.parse(data)
    assert qf.sender == "a@src.test"
    assert qf.addresses() == ["b@dst.test", "c@dst.test"]
    assert [(r.orcpt, r.notify) for r in qf.rcpts] == [("", ""), ("", "")]
    assert qf.attrs == {"origin": "x"}
    assert qf.content == b"Subject: s\n\nbody\n"
