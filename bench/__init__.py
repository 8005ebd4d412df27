"""Benchmarks of the consumer against the real stack (not tests: nothing here is timed in CI).

``python -m bench.indexer_throughput`` measures how fast the indexer turns a pre-filled
events topic into index rows, next to a bare Kafka drain of the same topic; see
bench/README.md.
"""
