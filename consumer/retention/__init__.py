"""Retention: policies, lifecycle rules applied by ``setup``, the sweeper and its audit."""
