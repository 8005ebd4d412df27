#!/bin/bash
KAFKA_HEAP_OPTS="-Xmx128m" exec /opt/kafka/bin/java-kafka org.apache.kafka.tools.BrokerApiVersionsCommand "$@"
