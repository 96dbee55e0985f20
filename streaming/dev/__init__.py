"""Development tools: the embedded broker, the synthetic producer, the demo and the in-process
harness. The worker never imports them."""
