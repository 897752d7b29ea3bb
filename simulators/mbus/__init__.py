"""Wired M-Bus slaves for tests, benchmarks and the demo: water and heat meters (or recorded
telegrams replayed) on a TCP port or a pseudo-terminal, with faults on demand."""
