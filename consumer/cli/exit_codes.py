"""The exit codes of ``python -m consumer``: the one table every verb returns from."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    # A failure at run time: MinIO, Kafka or the index failed, a file failed to upload,
    # `status` found the service unhealthy.
    FAILURE = 1
    # Bad usage or bad input (one line on stderr): nothing was done.
    USAGE = 2
    # Ctrl-C (128 + SIGINT, the shell's convention).
    INTERRUPTED = 130
