"""``outputs.format``: how predictions are encoded, chosen once at start.

json keeps streaming.engine.outputs.encode_predictions. avro registers ``prediction.avsc``
under ``<predictions topic>-value`` (TopicNameStrategy) at start and writes each prediction
Confluent-framed, so a consumer with confluent-kafka's AvroDeserializer reads it with no
project code.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from streaming.config import PipelineConfig
from streaming.decision.config import DECISIONS
from streaming.decision.reasons import ReasonLike
from streaming.engine.outputs import encode_predictions
from streaming.errors import StartupError

PREDICTION_AVSC = Path(__file__).with_name("prediction.avsc")

PredictionEncoder = Callable[..., list[bytes]]
"""encode_predictions' signature: (event_ids, ts_ms, scores, *, model, version, threshold,
scored_ms, worker) -> one value per row."""


def make_prediction_encoder(config: PipelineConfig) -> PredictionEncoder:
    """The encoder of ``outputs.format`` (StartupError when the registry cannot be used)."""
    if config.outputs.format == "json":
        return encode_predictions
    return AvroPredictions.register(config).encode


class AvroPredictions:
    """Predictions as Confluent-framed Avro of one registered schema."""

    def __init__(self, schema_id: int) -> None:
        import fastavro

        from streaming.formats.framing import frame

        self._header = frame(schema_id, b"")
        self._schema = fastavro.parse_schema(json.loads(PREDICTION_AVSC.read_text()))
        self._write = fastavro.schemaless_writer

    @classmethod
    def register(cls, config: PipelineConfig) -> AvroPredictions:
        """Register the prediction schema under ``<predictions topic>-value``."""
        from confluent_kafka.schema_registry import Schema

        from streaming.formats.registry import check_reachable, registry_client

        registry = config.schema_registry
        assert registry is not None, "the config validator requires schema_registry"
        subject = f"{config.topics.predictions}-value"
        with registry_client(registry, config.kafka.secrets_dir) as client:
            check_reachable(client, registry.url)
            try:
                schema_id = client.register_schema(
                    subject, Schema(PREDICTION_AVSC.read_text(), "AVRO")
                )
            except Exception as exc:  # noqa: BLE001 - refused (incompatible) or transport
                raise StartupError(
                    f"schema registry {registry.url} did not register the prediction schema "
                    f"under {subject}: {exc}; check the subject's compatibility setting"
                ) from None
        return cls(schema_id)

    def encode(
        self,
        event_ids: Sequence[str],
        ts_ms: Sequence[int],
        scores: np.ndarray,
        *,
        model: str,
        version: str,
        threshold: float,
        scored_ms: int,
        worker: str,
        decisions: np.ndarray | None = None,
        reasons: Mapping[int, Sequence[ReasonLike]] | None = None,
        node_scores: Mapping[str, np.ndarray] | None = None,
    ) -> list[bytes]:
        """One framed Avro prediction per row (inference thread)."""
        write, schema, header = self._write, self._schema, self._header
        out = []
        record = {
            "model": model,
            "version": version,
            "worker": worker,
            "scored_ms": scored_ms,
        }
        if decisions is None:
            decisions = (scores >= threshold).astype(np.int8) * 2
        cols = [(k, v.tolist()) for k, v in (node_scores or {}).items()]
        for i, (event_id, ts, score, code) in enumerate(
            zip(event_ids, ts_ms, scores.tolist(), decisions.tolist(), strict=True)
        ):
            record["event_id"] = event_id
            record["ts_ms"] = ts
            record["score"] = score
            record["flagged"] = score >= threshold
            record["decision"] = DECISIONS[code]
            why = reasons.get(i, ()) if reasons else ()
            record["reasons"] = [
                {"code": r.code, "text": r.text, "weight": float(r.weight)} for r in why
            ]
            record["scores"] = {k: col[i] for k, col in cols if col[i] == col[i]}
            buf = io.BytesIO()
            buf.write(header)
            write(buf, schema, record)
            out.append(buf.getvalue())
        return out
