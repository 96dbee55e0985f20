"""The monitor (faust/aiokafka) gets the workers' Kafka security settings, mapped."""

from __future__ import annotations

from pathlib import Path

import faust
import pytest

from streaming.config import KafkaConfig
from streaming.rollout.monitor.credentials import CredentialsError, monitor_credentials


def kafka(tmp_path: Path, **common: str) -> KafkaConfig:
    secrets = tmp_path / "secrets"
    secrets.mkdir(exist_ok=True)
    (secrets / "sasl.username").write_text("monitor\n")
    (secrets / "sasl.password").write_text("pw\n")
    return KafkaConfig(bootstrap="k:9092", group="g", common=common, secrets_dir=str(secrets))


def test_plaintext_needs_no_credentials(tmp_path: Path) -> None:
    assert monitor_credentials(KafkaConfig(bootstrap="k:9092", group="g")) is None


def test_sasl_scram_from_the_secrets_dir(tmp_path: Path) -> None:
    creds = monitor_credentials(
        kafka(
            tmp_path, **{"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-512"}
        )
    )
    assert isinstance(creds, faust.SASLCredentials)
    assert (creds.username, creds.password) == ("monitor", "pw")
    assert creds.mechanism.value == "SCRAM-SHA-512"
    assert "pw" not in repr(creds)


def test_unsupported_settings_are_refused_with_their_name(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError, match=r"sasl\.mechanism GSSAPI"):
        monitor_credentials(
            kafka(tmp_path, **{"security.protocol": "SASL_SSL", "sasl.mechanism": "GSSAPI"})
        )
    with pytest.raises(CredentialsError, match=r"ssl\.keystore\.location"):
        monitor_credentials(kafka(tmp_path, **{"ssl.keystore.location": "/x"}))
