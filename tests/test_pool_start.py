"""test_pool_start - an instance made before data_directory/sources
existed (issue 18): `sluice start` (master) makes the folder, so qmgr
keeps its reputation pauses across a restart instead of in memory only.
"""

import os
import stat

from conftest import LIBEXEC, require


def test_start_makes_missing_sources_folder(make_instance, tmp_path):
    """data/sources removed, as on an instance made by an older sluice:
    after `sluice start` it exists again, mode 0700, owned like the other
    folders sluice init gives the mail owner (data/mta-sts); a pause by
    the operator is saved in it and kept across a restart."""
    require(LIBEXEC / "qmgr", LIBEXEC / "smtp")
    pools = tmp_path / "pools"
    pools.write_text("tx 127.0.0.2 127.0.0.3\n")
    inst = make_instance(params={"smtp_source_pools": "texthash:%s" % pools})
    sources = inst.dir / "data" / "sources"
    os.rmdir(sources)
    inst.start()
    st = os.stat(sources)
    ref = os.stat(inst.dir / "data" / "mta-sts")
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700
    assert (st.st_uid, st.st_gid) == (ref.st_uid, ref.st_gid)
    inst.wait_log(r"master.*: created missing folder .*/data/sources/")
    inst.check("pool", "pause", "127.0.0.3")
    assert "127.0.0.3 paused 0 0 1\n" in (sources / "reputation").read_text()
    inst.stop()
    inst.start()
    inst.wait_log(r"source 127\.0\.0\.3: manual \(saved state\)")
    assert "pauses are not kept" not in inst.log()


def test_start_makes_missing_feedback_key_and_suppression(make_instance):
    """data/feedback.key and data/suppression removed, as on an instance
    made before #22: `sluice start` makes them for the mail owner (the
    daemons that sign tokens and keep the list cannot make them in a
    data/ that root owns), and a second start keeps the same key."""
    require(LIBEXEC / "master")
    inst = make_instance()
    data = inst.dir / "data"
    key = data / "feedback.key"
    sup = data / "suppression"
    if key.exists():
        key.unlink()
    if sup.exists():
        os.rmdir(sup)
    inst.start()
    ref = os.stat(data / "mta-sts")
    st = os.stat(key)
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_size == 32
    assert (st.st_uid, st.st_gid) == (ref.st_uid, ref.st_gid)
    st = os.stat(sup)
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700
    assert (st.st_uid, st.st_gid) == (ref.st_uid, ref.st_gid)
    inst.wait_log(r"master.*: created missing key .*/data/feedback\.key")
    first = key.read_bytes()
    inst.stop()
    inst.start()
    assert key.read_bytes() == first
