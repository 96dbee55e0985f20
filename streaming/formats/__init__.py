"""Schema Registry formats (Avro, Protobuf, JSON Schema): Confluent framing, the registry
client, and a decoder per format beside the JSON one.

Nothing here is imported when ``pipeline.format`` is json: the engine picks its decoder once
at start (streaming.formats.select), and only a framed format loads confluent-kafka's
schema-registry code and fastavro.
"""
