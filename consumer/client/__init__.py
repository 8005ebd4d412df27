"""The client side: the Python API the bot uses (``VoxClient``, ``SyncVoxClient``)."""

from consumer.client.api import (
    DeleteResult,
    ProcessedFeed,
    ProcessedResult,
    ProgressCallback,
    UploadProgress,
    UploadResult,
    VoxClient,
)
from consumer.client.presign import PresignedPost, PresignedPut
from consumer.client.sync import SyncVoxClient
from consumer.errors import (
    ConnectionFailed,
    ConsumerError,
    DownloadFailed,
    InvalidInput,
    NotFound,
    UploadFailed,
)

__all__ = [
    "ConnectionFailed",
    "ConsumerError",
    "DeleteResult",
    "DownloadFailed",
    "InvalidInput",
    "NotFound",
    "PresignedPost",
    "PresignedPut",
    "ProcessedFeed",
    "ProcessedResult",
    "ProgressCallback",
    "SyncVoxClient",
    "UploadFailed",
    "UploadProgress",
    "UploadResult",
    "VoxClient",
]
