"""A fence between faust's seek to committed offsets and the batch the fetcher hands out.

Why (issue 21): after an assignment faust resumes the stream partitions and only then seeks
them to the committed offsets (``Recovery.on_recovery_completed``). The fetcher goes on handing
out a batch while the seek resets the consumer's read offset underneath it; the next record of
that batch then looks like a jump past missing offsets, and faust records the range as a "gap",
which counts as acknowledged. The records handed to the stream queues meanwhile are cleared
when faust resumes the flow right after the seek. Traced on the embedded broker: a restarted
monitor committed 34 records per partition that never reached an agent, and its commits crept
forward one offset per second behind the gap.

The fence stops the fetcher handing out records once a seek is waiting (the record in flight
is finished), makes the seek wait for that, and the next fetch wait until the seek is done, so
the read offset the seek sets is never overtaken by a record fetched before it. The records
held back are fetched again: the seek moves the partitions back to their committed offsets,
and a partition it leaves alone (nothing committed yet) is moved back to the first one held.

``TailCheckedConsumer`` also reads a changelog's end from its tail for the table restore
(endoffsets.py says why).

Thread ownership: the fence lives on faust's event loop; the fetcher task begins and ends the
passes, the recovery (through ``perform_seek``) runs the seeks, both on that one loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, Message

log = logging.getLogger("streaming.monitor")


class SeekFence:
    """Lets a seek run only while no fetched batch is being handed out, and no fetch alongside.

    A pass is one fetch and the handing out of its records (``begin_pass`` once the fetcher
    is about to fetch, ``end_pass`` when it is done); ``seeking()`` wraps the seek. Once a
    seek is waiting, the pass hands out no more records: it holds them back and tells
    ``end_pass`` the first offset it held per partition, which the seek receives. A seek waits
    for the pass in progress to end, and a pass waits for a seek in progress to end, so the
    read offset the seek sets is never overtaken by a record fetched before it. Pure asyncio,
    no Kafka: the unit tests drive it directly.
    """

    def __init__(self, max_wait_s: float = 10.0) -> None:
        self.max_wait_s = max_wait_s
        """Longest a seek waits for the pass in progress (it cannot wait forever: faust's
        recovery bounds the whole seek by the broker request timeout)."""
        self._pass_task: asyncio.Task[Any] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._open = asyncio.Event()
        self._open.set()
        self.waited = 0
        """Seeks that waited for a pass in progress: each one a race the fence settled."""
        self.late = 0
        """Seeks that went ahead because the pass in progress did not end in time."""
        self._held: dict[Any, int] = {}

    async def begin_pass(self) -> None:
        while not self._open.is_set():  # a seek is under way: fetch after it
            await self._open.wait()
        self._pass_task = asyncio.current_task()
        self._idle.clear()

    @property
    def is_open(self) -> bool:
        """False while a seek waits or runs: the pass in progress must hand out nothing more."""
        return self._open.is_set()

    def end_pass(self, held: dict[Any, int] | None = None) -> None:
        """The pass is over; ``held``: the first offset per partition it did not hand out."""
        for tp, offset in (held or {}).items():
            self._held[tp] = min(offset, self._held.get(tp, offset))
        self._pass_task = None
        self._idle.set()

    @contextlib.asynccontextmanager
    async def seeking(self) -> AsyncIterator[dict[Any, int]]:
        """Wraps a seek; gives it the first held offset per partition (to fetch again)."""
        self._open.clear()
        try:
            # faust seeks from inside a pass too (a fetch while its flow is stopped); that
            # pass hands out nothing after the seek, so it need not (and cannot) end first.
            if not self._idle.is_set() and asyncio.current_task() is not self._pass_task:
                self.waited += 1
                try:
                    await asyncio.wait_for(self._idle.wait(), self.max_wait_s)
                except TimeoutError:
                    self.late += 1
                    log.warning(
                        "seek to committed offsets after waiting %.0f s for the fetcher: "
                        "records of the batch in progress may be skipped",
                        self.max_wait_s,
                    )
            held, self._held = self._held, {}
            yield held
        finally:
            self._open.set()


class FencedConsumer(faust_aiokafka.Consumer):
    """faust's aiokafka consumer with a :class:`SeekFence` around its seek to committed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fence = SeekFence()

    async def perform_seek(self) -> None:
        async with self.fence.seeking() as held:
            await super().perform_seek()
            assigned = self.assignment()
            for tp, offset in held.items():
                committed = self._read_offset.get(tp)
                # aiokafka moves only partitions with a committed offset above 0; the others
                # must go back to the first record held, or it would never be fetched again.
                if tp in assigned and (committed is None or committed <= 0):
                    await self.seek(tp, offset)

    async def _wait_next_records(self, timeout: float) -> Any:
        if not self.flow_active:
            # As faust does first thing; here so that a stopped flow is not a pass that
            # would hold up the seek recovery makes before it resumes the flow.
            await self.wait(self.can_resume_flow)  # type: ignore[arg-type]
        await self.fence.begin_pass()
        return await super()._wait_next_records(timeout)

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]:
        fence = self.fence
        held: dict[TP, int] = {}
        records = super().getmany(timeout)
        try:
            async for tp, message in records:
                if not fence.is_open:  # a seek waits: fetch the rest again after it
                    held.setdefault(tp, message.offset)
                    continue
                yield tp, message
        finally:
            await records.aclose()
            fence.end_pass(held)


class TailCheckedConsumer(FencedConsumer):
    """Also takes a changelog's end from its tail (endoffsets.py), for the table restore."""

    async def highwaters(self, *partitions: TP) -> Mapping[TP, int]:
        reported = await super().highwaters(*partitions)
        probe: Callable[[dict[tuple[str, int], int]], dict[tuple[str, int], int]] | None
        probe = getattr(self.app, "read_end_offsets", None)
        if probe is None or not reported:
            return reported
        by_key = {(tp.topic, tp.partition): tp for tp in reported}
        ends = await asyncio.get_running_loop().run_in_executor(
            None, probe, {key: reported[tp] for key, tp in by_key.items()}
        )
        longer = {by_key[k]: v for k, v in ends.items() if v != reported[by_key[k]]}
        if longer:
            log.info("changelog ends past the reported high watermark: %s", longer)
        return {**reported, **longer}


class FencedTransport(faust_aiokafka.Transport):
    Consumer = TailCheckedConsumer


class MonitorApp(faust.App):
    """The monitor's faust app: consumes through :class:`TailCheckedConsumer`."""

    read_end_offsets: Callable[[dict[tuple[str, int], int]], dict[tuple[str, int], int]] | None
    read_end_offsets = None
    """Set by build_app: how the consumer finds a changelog's real end (endoffsets.py)."""

    def _new_transport(self) -> Any:
        return FencedTransport(self.conf.broker_consumer, self)
