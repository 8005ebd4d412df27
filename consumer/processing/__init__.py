"""Processing: every new audio object gets processed, whoever uploaded it.

The ``processor`` consumer group reads the same events topic as the indexer, so a slow or
failing processor never delays indexing; more processes in the group share the work.
``rules`` picks the processors for an event, ``registry`` loads them (entry-point group
``consumer.processors``), ``worker`` runs them with status in the index, retries, a
timeout, bounded concurrency and the DLQ.
"""
