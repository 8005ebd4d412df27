"""Kafka: every client built in one place (clients.py: options, security, start), the
batch loop of every consuming role (batches.py), the dead-letter topic (dead_letters.py),
and offsets and lag measured from outside a group (lag.py)."""
