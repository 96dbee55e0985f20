"""Model runtimes. Each framework is imported only inside its own module."""
