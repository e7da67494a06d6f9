"""acacheorm: an asyncio-native object mapper for caches and key-value stores.

Example::

    import acacheorm as co

    class User(co.Model):
        id = co.IntegerField(primary_key=True)
        name = co.StringField()

        class Meta:
            backend = co.SimpleBackend()
            serializer = "msgpack"

    await User.create(id=1, name="Sam")
    user = await User.get(id=1)
"""

from . import backends
from ._asgi import install_exception_handlers, lifespan
from ._auto import AutoField
from ._commands import KEEP_TTL, Batch
from ._declare import CompositeKey
from ._exceptions import (
    AtomicityError,
    BackendError,
    BackendUnavailable,
    CacheORMError,
    ConfigurationError,
    ConflictError,
    DoesNotExist,
    IntegrityError,
    KeyClashWarning,
    KeyTooLongError,
    MultipleObjectsReturned,
    SerializationError,
    ValidationError,
    ValueTooLargeError,
)
from ._executor import BatchEvent, add_batch_hook, remove_batch_hook
from ._fields import Expression, Field
from ._fields_scalar import (
    BinaryField,
    BooleanField,
    DecimalField,
    EnumField,
    FloatField,
    IntegerField,
    ShortUUIDField,
    StringField,
    UUIDField,
)
from ._fields_struct import JSONField, ListField, StructField
from ._fields_time import DateField, DateTimeField, DateTimeTZField, TimeField, TimestampField
from ._filter import FilterQuery
from ._index import CASCADE, DO_NOTHING, RESTRICT, SET_NULL, OnDelete
from ._model import Model
from ._pydantic import pydantic_model
from ._query import Query, delete_many, insert_many, prefetch, query_many
from ._relations import ForeignKeyField
from ._signals import Signal, post_delete, post_save, pre_delete, pre_save
from ._urls import backend_from_url
from .backends.base import Backend
from .backends.filesystem import FileSystemBackend
from .backends.memcached import MemcachedBackend
from .backends.memory import SimpleBackend
from .backends.near import NearCache
from .backends.redis import RedisBackend
from .serializers import (
    JSONSerializer,
    MsgpackSerializer,
    PickleSerializer,
    ProtobufSerializer,
    Serializer,
    registry,
)

__version__ = "0.1.0"

__all__ = [
    "CASCADE",
    "DO_NOTHING",
    "KEEP_TTL",
    "RESTRICT",
    "SET_NULL",
    "AtomicityError",
    "AutoField",
    "Backend",
    "BackendError",
    "BackendUnavailable",
    "Batch",
    "BatchEvent",
    "BinaryField",
    "BooleanField",
    "CacheORMError",
    "CompositeKey",
    "ConfigurationError",
    "ConflictError",
    "DateField",
    "DateTimeField",
    "DateTimeTZField",
    "DecimalField",
    "DoesNotExist",
    "EnumField",
    "Expression",
    "Field",
    "FileSystemBackend",
    "FilterQuery",
    "FloatField",
    "ForeignKeyField",
    "IntegerField",
    "IntegrityError",
    "JSONField",
    "JSONSerializer",
    "KeyClashWarning",
    "KeyTooLongError",
    "ListField",
    "MemcachedBackend",
    "Model",
    "MsgpackSerializer",
    "MultipleObjectsReturned",
    "NearCache",
    "OnDelete",
    "PickleSerializer",
    "ProtobufSerializer",
    "Query",
    "RedisBackend",
    "SerializationError",
    "Serializer",
    "ShortUUIDField",
    "Signal",
    "SimpleBackend",
    "StringField",
    "StructField",
    "TimeField",
    "TimestampField",
    "UUIDField",
    "ValidationError",
    "ValueTooLargeError",
    "__version__",
    "add_batch_hook",
    "backend_from_url",
    "backends",
    "delete_many",
    "insert_many",
    "install_exception_handlers",
    "lifespan",
    "post_delete",
    "post_save",
    "pre_delete",
    "pre_save",
    "prefetch",
    "pydantic_model",
    "query_many",
    "registry",
    "remove_batch_hook",
]
