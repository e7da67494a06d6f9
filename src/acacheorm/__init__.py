"""acacheorm: an asyncio-native object mapper for caches and key-value stores."""

from ._exceptions import (
    AtomicityError,
    BackendError,
    BackendUnavailable,
    CacheORMError,
    ConfigurationError,
    ConflictError,
    DoesNotExist,
    KeyTooLongError,
    SerializationError,
    ValidationError,
    ValueTooLargeError,
)
from .backends.memory import SimpleBackend

__all__ = [
    "AtomicityError",
    "BackendError",
    "BackendUnavailable",
    "CacheORMError",
    "ConfigurationError",
    "ConflictError",
    "DoesNotExist",
    "KeyTooLongError",
    "SerializationError",
    "SimpleBackend",
    "ValidationError",
    "ValueTooLargeError",
]
