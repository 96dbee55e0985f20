"""The monitor's Kafka security from the same settings the workers use.

The workers pass ``kafka.common`` and ``kafka.secrets_dir`` to librdkafka; faust speaks
aiokafka, so the librdkafka names are mapped here: security.protocol, sasl.mechanism,
sasl.username, sasl.password, ssl.ca.location, ssl.certificate.location, ssl.key.location,
ssl.key.password. Anything else security-related is refused at start rather than ignored.
"""

from __future__ import annotations

import ssl
from typing import Any

import faust

from streaming.config import KafkaConfig
from streaming.kafka.secrets import load_secrets

_MECHANISMS = {"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"}
_SSL_KEYS = {
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
    "ssl.key.password",
    "ssl.endpoint.identification.algorithm",
}


class CredentialsError(ValueError):
    """Security settings the monitor cannot express; the message names the setting."""


def monitor_credentials(cfg: KafkaConfig) -> Any | None:
    """faust broker credentials, or None for a plaintext cluster."""
    settings = {**cfg.common, **load_secrets(cfg.secrets_dir)}
    protocol = str(settings.get("security.protocol", "PLAINTEXT")).upper()
    unknown = sorted(
        k
        for k in settings
        if (k.startswith("ssl.") and k not in _SSL_KEYS)
        or (k.startswith("sasl.") and k not in {"sasl.mechanism", "sasl.username", "sasl.password"})
    )
    if unknown:
        raise CredentialsError(
            f"the monitor (faust/aiokafka) cannot use {', '.join(unknown)}; it supports "
            "SASL PLAIN/SCRAM and TLS with CA, client certificate and key files"
        )
    context = _ssl_context(settings) if protocol in ("SSL", "SASL_SSL") else None
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    if protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        mechanism = str(settings.get("sasl.mechanism", "PLAIN")).upper()
        if mechanism not in _MECHANISMS:
            raise CredentialsError(
                f"sasl.mechanism {mechanism}: the monitor supports {', '.join(sorted(_MECHANISMS))}"
            )
        return faust.SASLCredentials(
            username=settings.get("sasl.username"),
            password=settings.get("sasl.password"),
            mechanism=mechanism,
            ssl_context=context,
        )
    raise CredentialsError(
        f"security.protocol {protocol}: expected PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
    )


def _ssl_context(settings: dict[str, Any]) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=settings.get("ssl.ca.location"))
    if settings.get("ssl.endpoint.identification.algorithm") == "none":
        context.check_hostname = False
    cert = settings.get("ssl.certificate.location")
    if cert:
        context.load_cert_chain(
            cert, settings.get("ssl.key.location"), settings.get("ssl.key.password")
        )
    return context
