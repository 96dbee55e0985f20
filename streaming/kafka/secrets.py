"""Kafka credentials from files, never from the pipeline config itself.

``kafka.secrets_dir`` (or ``STREAMING_KAFKA_SECRETS_DIR``) names a directory in which every
file is one librdkafka property: the file name is the property (``sasl.username``,
``sasl.password``, ``ssl.key.password``, ...), the content its value. That is exactly how a
Kubernetes Secret mounted as a volume looks, so the Helm chart mounts one there and the
values never hold a password. The values are never logged; errors name the file, not its
content.
"""

from __future__ import annotations

from pathlib import Path

ENV_SECRETS_DIR = "STREAMING_KAFKA_SECRETS_DIR"
SECRET_PREFIXES = ("sasl.", "ssl.")
SECRET_KEYS = frozenset({"sasl.password", "ssl.key.password", "ssl.keystore.password"})
"""Properties that may only come from the secrets directory, never from the config file."""
REGISTRY_USER_INFO = "schema.registry.basic.auth.user.info"
"""The Schema Registry's ``user:password`` (streaming.formats): read from this directory too,
never passed to librdkafka."""


class SecretsError(ValueError):
    """The secrets directory cannot be used; the message says what to fix."""


def load_secrets(directory: str | Path | None) -> dict[str, str]:
    """The librdkafka properties in ``directory`` (empty when None)."""
    if directory is None:
        return {}
    root = Path(directory)
    if not root.is_dir():
        raise SecretsError(
            f"kafka.secrets_dir {root} is not a directory; mount the Kafka credentials there "
            f"(one file per property, e.g. sasl.username) or unset it"
        )
    out: dict[str, str] = {}
    for path in sorted(root.iterdir()):
        # A mounted Secret also holds ..data and timestamped folders: not properties.
        if path.name.startswith(".") or not path.is_file() or path.name == REGISTRY_USER_INFO:
            continue
        if not path.name.startswith(SECRET_PREFIXES):
            raise SecretsError(
                f"{path}: only sasl.* and ssl.* properties belong in kafka.secrets_dir; "
                "put other librdkafka settings in kafka.common"
            )
        out[path.name] = path.read_text().rstrip("\r\n")
    return out


def registry_user_info(directory: str | Path | None) -> str | None:
    """The Schema Registry's ``user:password`` from the secrets directory, if it has one."""
    if directory is None:
        return None
    path = Path(directory) / REGISTRY_USER_INFO
    if not path.is_file():
        return None
    value = path.read_text().strip()
    if ":" not in value:
        raise SecretsError(f"{path}: expected user:password (the value itself is not shown)")
    return value
