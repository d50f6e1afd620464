"""test_events_e2e - the journal end to end under kill -9, small
(tracker issue 19; the full size is tests/torture/events_e2e.py, run by
`make torture`)

2,000 messages over SMTP through an instance exporting to the SQLite
store, a webhook receiver and (with kcat) librdkafka's mock cluster, the
whole instance killed -9 twice while they flow: every acknowledged
message has exactly one received and one delivered event id in each
exporter; repeats of an id are counted (at least once), none is missing.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "torture"))

from events_e2e import run_e2e   # noqa: E402


def test_events_end_to_end_small(make_instance, make_sink, tmp_path):
    run_e2e(make_instance, make_sink, tmp_path, 2000, 2)
