"""What the code under test does to the process around the monitor - a time zone set at
import, a deleted log - and what a failed start leaves behind: the monitor says what
happened, keeps its own times and cleans up after itself."""

from __future__ import annotations

import time

import pytest

from .conftest import only_run

SETS_THE_TIME_ZONE = """
import os
import time

# As Django does at import when settings.TIME_ZONE is set (default America/Chicago).
os.environ["TZ"] = "Asia/Kathmandu"
time.tzset()
"""


@pytest.mark.parametrize("mode", [["-n", "2"], ["-p", "no:xdist"]], ids=["xdist", "single"])
def test_a_time_zone_set_by_the_code_under_test_moves_no_run_id_nor_time(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, mode: list[str]
) -> None:
    monkeypatch.setenv("TZ", "UTC")
    pytester.makeconftest(SETS_THE_TIME_ZONE)
    pytester.makepyfile(
        test_tz=SETS_THE_TIME_ZONE + "\ndef test_a():\n    pass\n\ndef test_b():\n    pass\n"
    )
    before = time.time()
    pytester.runpytest_subprocess("--monitor", *mode).assert_outcomes(passed=2)
    after = time.time()
    run = only_run(pytester)
    # the run id is the start in the zone the run was started in (UTC here), not +05:45
    stamp = time.strftime("%Y%m%d-%H%M", time.gmtime(before))
    stamp_after = time.strftime("%Y%m%d-%H%M", time.gmtime(after))
    assert run.header.run_id[:13] in (stamp, stamp_after), run.header.run_id
    for event in run.events:
        if event.ts:
            assert before - 1 <= event.ts <= after + 1, event
