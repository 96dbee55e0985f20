"""Credentials: read from a mounted-Secret-like directory, passed to librdkafka, never logged;
a refused login stops the worker at start with the fix. Against the embedded broker with
authentication on (Tansu 0.6.0 then refuses every login: it cannot create users while
authentication is required and keeps none across restarts, so a successful login cannot be
shown here; the refusal proves that the SASL settings reached the broker)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from streaming.dev.broker import EmbeddedBroker
from tests.kafka_helpers import ROOT, write_raw_config

pytestmark = pytest.mark.integration

PASSWORD = "s3cr3t-Pa55word-never-logged"  # noqa: S105 - a test credential


@pytest.fixture(scope="module")
def auth_broker(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    log = tmp_path_factory.mktemp("auth-broker") / "broker.log"
    with EmbeddedBroker(log_path=log, authentication=True) as broker:
        yield broker


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"])
def test_refused_login_stops_the_start_with_the_fix_and_no_password(
    auth_broker, models_built, tmp_path, mechanism
):
    secrets = tmp_path / "kafka-secrets"
    secrets.mkdir()
    (secrets / "sasl.username").write_text("fraud-worker\n")
    (secrets / "sasl.password").write_text(PASSWORD + "\n")
    # The layout of a mounted Kubernetes Secret: a ..data link and a hidden folder are ignored.
    (secrets / "..2026_11_24").mkdir()
    (secrets / "..data").symlink_to(secrets / "..2026_11_24")
    config = write_raw_config(
        tmp_path,
        auth_broker.bootstrap,
        **{
            "kafka.common": {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": mechanism},
        },
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "streaming", "run", "-c", str(config), "--log-level", "DEBUG"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "STREAMING_KAFKA_SECRETS_DIR": str(secrets)},
    )
    took = time.monotonic() - started
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "refused the connection" in output and "kafka.secrets_dir" in output, output
    assert "sasl.username" in output  # the fix names the files to check
    assert PASSWORD not in output
    assert took < 15, f"a refused login took {took:.1f} s to report"


def run_worker(config) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run(
        [sys.executable, "-m", "streaming", "run", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def test_a_password_in_the_config_file_is_refused_at_start(tmp_path):
    config = write_raw_config(
        tmp_path, "127.0.0.1:1", **{"kafka.common": {"sasl.password": PASSWORD}}
    )
    done = run_worker(config)
    assert done.returncode == 2
    assert "kafka.common" in done.stderr and "kafka.secrets_dir" in done.stderr, done.stderr
    assert PASSWORD not in done.stderr + done.stdout


def test_a_secrets_dir_with_a_non_credential_file_is_refused(tmp_path):
    secrets = tmp_path / "s"
    secrets.mkdir()
    (secrets / "linger.ms").write_text("5")
    config = write_raw_config(tmp_path, "127.0.0.1:1", **{"kafka.secrets_dir": str(secrets)})
    done = run_worker(config)
    assert done.returncode == 2
    assert "only sasl.* and ssl.*" in done.stderr, done.stderr
