"""The card-fraud scoring pipeline: schema, preprocessing, synthetic events."""

from pathlib import Path

from pipelines.fraud.generator import make_generator
from pipelines.fraud.preprocessing import make_preprocessor
from pipelines.fraud.schema import Transaction
from pipelines.fraud.state import STATE
from streaming.pipeline import PipelineSpec

PIPELINE = PipelineSpec(
    name="fraud",
    schema=Transaction,
    id_field="event_id",
    ts_field="ts_ms",
    make_preprocessor=make_preprocessor,
    make_generator=make_generator,
    avro_schema=str(Path(__file__).with_name("transaction.avsc")),
    proto_descriptor=str(Path(__file__).with_name("transaction.desc")),
    proto_message="fraud.Transaction",
    state=STATE,
)
