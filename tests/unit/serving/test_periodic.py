"""``Periodic``: a call that raises does not end the thread."""

from __future__ import annotations

import threading

from fitpulse_orchestration.serving.periodic import Periodic


def test_a_call_that_raises_is_followed_by_the_next_one() -> None:
    calls: list[int] = []
    second = threading.Event()

    def fn() -> None:
        calls.append(len(calls))
        if len(calls) == 1:
            raise RuntimeError("the first call fails")
        second.set()

    periodic = Periodic("test-periodic", 0.01, fn)
    periodic.start()
    try:
        assert second.wait(timeout=10.0)
    finally:
        periodic.stop()
    assert calls[:2] == [0, 1]
