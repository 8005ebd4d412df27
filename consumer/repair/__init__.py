"""Repairing the index when events were lost: ``reconcile`` compares the buckets with the
index and repairs the differences (compare.py decides, reconcile.py does the I/O);
``replay`` indexes the events topic again from a moment on (replay.py)."""
