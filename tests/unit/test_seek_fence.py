"""The fence between faust's seek to committed offsets and the fetcher (issue 21).

Without it, a restarted monitor's seek reset the read offset while the fetcher was still
handing out a batch fetched before it; faust took the next record for a jump and counted the
records in between as acknowledged. These tests drive the fence's ordering directly.
"""

from __future__ import annotations

import asyncio

from streaming.rollout.monitor.fence import FencedConsumer, FencedTransport, MonitorApp, SeekFence


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def test_a_seek_waits_for_the_batch_being_handed_out() -> None:
    async def run() -> list[str]:
        fence, order = SeekFence(), []

        async def fetcher() -> None:
            await fence.begin_pass()
            order.append("fetched")
            await _settle()  # handing out records; the seek is waiting meanwhile
            order.append("handed out")
            fence.end_pass()

        async def seek() -> None:
            async with fence.seeking():
                order.append("seek")

        f = asyncio.create_task(fetcher())
        await asyncio.sleep(0)
        await asyncio.gather(seek(), f)
        assert fence.waited == 1 and fence.late == 0
        return order

    assert asyncio.run(run()) == ["fetched", "handed out", "seek"]


def test_records_of_the_batch_after_the_seek_came_are_held_and_given_to_the_seek() -> None:
    """The fetcher stops handing out once a seek waits; the seek gets the first offset held
    per partition, to fetch them again (a partition with nothing committed is not moved)."""

    async def run() -> tuple[list[int], dict[str, int]]:
        fence, handed_out, got = SeekFence(), [], {}
        in_flight = asyncio.Event()
        batch = [("p0", 10), ("p1", 20), ("p0", 11), ("p1", 21), ("p0", 12)]

        async def fetcher() -> None:
            await fence.begin_pass()
            held: dict[str, int] = {}
            for tp, offset in batch:
                if not fence.is_open:
                    held.setdefault(tp, offset)
                    continue
                handed_out.append(offset)
                await in_flight.wait()  # the record in flight: the seek arrives meanwhile
            fence.end_pass(held)

        async def seek() -> None:
            async with fence.seeking() as held:
                got.update(held)

        f = asyncio.create_task(fetcher())
        await _settle()  # the first record is in flight
        s = asyncio.create_task(seek())
        await _settle()  # the seek waits for it
        in_flight.set()
        await asyncio.gather(s, f)
        return handed_out, got

    handed_out, held = asyncio.run(run())
    assert handed_out == [10]
    assert held == {"p1": 20, "p0": 11}  # everything not handed out is fetched again


def test_a_fetch_waits_for_the_seek_under_way() -> None:
    async def run() -> list[str]:
        fence, order = SeekFence(), []
        release = asyncio.Event()

        async def seek() -> None:
            async with fence.seeking():
                order.append("seek started")
                await release.wait()
                order.append("seek done")

        async def fetcher() -> None:
            await fence.begin_pass()
            order.append("fetched")
            fence.end_pass()

        s = asyncio.create_task(seek())
        await _settle()
        f = asyncio.create_task(fetcher())
        await _settle()
        assert order == ["seek started"]  # the fetch has not gone ahead of the seek
        release.set()
        await asyncio.gather(s, f)
        return order

    assert asyncio.run(run()) == ["seek started", "seek done", "fetched"]


def test_a_seek_from_inside_the_pass_does_not_wait_for_itself() -> None:
    """faust seeks from within a fetch whose flow is stopped; that must not deadlock."""

    async def run() -> SeekFence:
        fence = SeekFence(max_wait_s=30.0)
        await fence.begin_pass()
        async with fence.seeking():
            pass
        fence.end_pass()
        return fence

    fence = asyncio.run(asyncio.wait_for(run(), 5))
    assert fence.waited == 0 and fence.late == 0


def test_a_stuck_pass_delays_the_seek_only_up_to_the_bound_and_is_counted() -> None:
    async def run() -> SeekFence:
        fence = SeekFence(max_wait_s=0.05)
        stuck = asyncio.Event()

        async def fetcher() -> None:
            await fence.begin_pass()
            await stuck.wait()

        f = asyncio.create_task(fetcher())
        await asyncio.sleep(0)
        async with fence.seeking():
            pass
        f.cancel()
        return fence

    fence = asyncio.run(run())
    assert fence.waited == 1 and fence.late == 1


def test_the_monitor_app_consumes_through_the_fenced_consumer() -> None:
    app = MonitorApp("fence-test", broker="kafka://127.0.0.1:9", web_enabled=False)
    assert isinstance(app.transport, FencedTransport)
    assert issubclass(FencedTransport.Consumer, FencedConsumer)
