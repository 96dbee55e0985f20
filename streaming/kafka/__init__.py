"""Everything that talks to Kafka: client settings, secrets, topics, the source and the sink."""
