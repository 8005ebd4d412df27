"""The Kafka side of every consuming role: the batch loop (batches.py) and the dead-letter
topic (dead_letters.py). Client options and security live in consumer/kafka_client.py."""
