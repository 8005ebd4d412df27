"""Kafka consumer plumbing shared by the indexer and the processor workers."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition


class FetchPause:
    """Pauses fetching while a long operation runs, and keeps the consumer in its group.

    ``poll()`` is called repeatedly during the operation: it pauses every assigned
    partition (again, after a rebalance) and polls Kafka, which keeps
    ``max.poll.interval.ms`` satisfied. A partition assigned by a rebalance during that
    poll is not paused yet and may return records: they are rewound, so they are read
    again after ``resume()``, never skipped.
    """

    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self._consumer = consumer
        self._paused: set[TopicPartition] = set()

    async def poll(self) -> bool:
        """Pause and poll once; True when this call paused partitions not paused before."""
        assignment = self._consumer.assignment()
        newly_paused = bool(assignment - self._paused)
        if newly_paused:
            self._consumer.pause(*assignment)
            self._paused = set(assignment)
        stray = await self._consumer.getmany(timeout_ms=0)
        for tp, records in stray.items():
            self._consumer.seek(tp, records[0].offset)
        return newly_paused

    @property
    def paused(self) -> bool:
        return bool(self._paused)

    def resume(self) -> None:
        if self._paused:
            assignment = self._consumer.assignment()
            self._consumer.resume(*(tp for tp in self._paused if tp in assignment))
            self._paused = set()


async def drained(consumer: AIOKafkaConsumer) -> bool:
    """True when every assigned partition's position has reached its end offset."""
    assignment = consumer.assignment()
    if not assignment:
        return False
    ends = await consumer.end_offsets(list(assignment))
    for tp in assignment:
        if await consumer.position(tp) < ends[tp]:
            return False
    return True
