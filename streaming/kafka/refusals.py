"""What a failed delivery means: a refusal of that one record, a setup that no retry fixes,
or trouble that a restart may get past.

- record: the broker (or the producer) refuses this record for what it is (too large, invalid
  for the topic). Other records go through, so the record is dead-lettered with stage
  ``publish`` and the broker's reason, and the worker goes on.
- setup: the topic is gone or the principal may not write it. No record will get through;
  the worker stops with exit 2 and names the topic and the fix.
- transient (everything else, e.g. timed out after librdkafka's retries): the worker stops
  with exit 1 and a restart reprocesses from the last commit.
"""

from __future__ import annotations

from typing import Any, Literal

RECORD = "record"
SETUP = "setup"
TRANSIENT = "transient"
Kind = Literal["record", "setup", "transient"]

_RECORD = {
    "MSG_SIZE_TOO_LARGE",
    "_MSG_SIZE_TOO_LARGE",
    "INVALID_RECORD",
    "CORRUPT_MESSAGE",
    "RECORD_LIST_TOO_LARGE",
    "INVALID_MSG",
    "INVALID_MSG_SIZE",
    "_KEY_SERIALIZATION",
    "_VALUE_SERIALIZATION",
}
_SETUP = {
    "UNKNOWN_TOPIC_OR_PART": "create it (streaming topics create -c CONFIG) or fix topics.*",
    "_UNKNOWN_TOPIC": "create it (streaming topics create -c CONFIG) or fix topics.*",
    "_UNKNOWN_PARTITION": "the topic has fewer partitions than expected; recreate it",
    "TOPIC_AUTHORIZATION_FAILED": "grant the worker's principal Write on it (broker ACLs)",
    "CLUSTER_AUTHORIZATION_FAILED": "grant the worker's principal IdempotentWrite (broker ACLs)",
    "TRANSACTIONAL_ID_AUTHORIZATION_FAILED": "grant the principal its transactional id (ACLs)",
}


def classify(err: Any) -> Kind:
    name = err.name() if err is not None and hasattr(err, "name") else ""
    if name in _RECORD:
        return RECORD
    if name in _SETUP:
        return SETUP
    return TRANSIENT


def setup_fix(err: Any) -> str:
    return _SETUP.get(err.name(), "check the topic and the broker")
