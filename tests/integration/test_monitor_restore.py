"""A restarted monitor restores its tables to the changelog's real end (issue 21).

The embedded broker reports the base offset of a partition's last record batch plus one as
its high watermark; faust restored up to that and lost the last batch of each changelog.
"""

from __future__ import annotations

import uuid

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from streaming.rollout.monitor.endoffsets import read_end_offsets


def _topic_with_batches(bootstrap: str, sizes: list[int]) -> str:
    topic = f"restore-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 200})
    for size in sizes:  # one flush per size: one record batch each
        for i in range(size):
            producer.produce(topic, key=b"k", value=str(i).encode())
        assert producer.flush(30) == 0
    return topic


def test_the_changelog_end_is_read_from_its_tail_not_the_reported_watermark(broker):
    topic = _topic_with_batches(broker.bootstrap, [10, 30])
    probe = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "restore-test"})
    _, reported = probe.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    probe.close()
    settings = {"bootstrap.servers": broker.bootstrap, "group.id": "restore-test"}

    ends = read_end_offsets(settings, {(topic, 0): reported})

    assert ends == {(topic, 0): 40}  # 40 records written; a restore must read all of them
    # An empty partition (nothing written yet) is not read at all.
    assert read_end_offsets(settings, {(topic, 1): 0}) == {(topic, 1): 0}
