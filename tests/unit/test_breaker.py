from streaming.engine.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_consecutive_failures_only() -> None:
    b = CircuitBreaker(failures=3, cooldown_s=10, clock=Clock())
    assert not b.record(False) and not b.record(False)
    b.record(True)  # a success resets the streak
    assert not b.record(False) and not b.record(False)
    assert b.record(False)
    assert b.state == OPEN and not b.allow()


def test_half_open_after_cooldown_then_closes_or_reopens() -> None:
    clock = Clock()
    b = CircuitBreaker(failures=1, cooldown_s=10, clock=clock)
    b.record(False)
    clock.now = 9.9
    assert not b.allow()
    clock.now = 10.0
    assert b.state == HALF_OPEN and b.allow()
    assert b.record(False)  # the trial batch failed: open again, for a new cooldown
    assert b.state == OPEN and b.opened == 2
    clock.now = 20.0
    b.record(True)
    assert b.state == CLOSED and b.allow()
