from __future__ import annotations

from proxy.retry import Backoff


def test_grows_caps_and_resets_with_injected_jitter() -> None:
    backoff = Backoff(maximum=1.0, initial=0.1, rng=lambda: 1.0)  # jitter factor 1.0
    assert [round(backoff.next_delay(), 3) for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    backoff.reset()
    assert backoff.next_delay() == 0.1
    low = Backoff(maximum=1.0, initial=0.1, rng=lambda: 0.0)  # jitter factor 0.5
    assert low.next_delay() == 0.05
