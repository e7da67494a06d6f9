"""Serializers turn a row (a dict of primitives) into bytes and back, and the registry finds
them by name (``Meta.serializer``) or by the tag a stored payload carries.

Presets: ``"json"``, ``"msgpack"`` (imports msgpack at first use) and ``"pickle"`` (signed;
reads its key from ``ACACHEORM_PICKLE_KEY``).

Example::

    from acacheorm.serializers import ProtobufSerializer, registry

    registry.register("protobuf.user", ProtobufSerializer(user_pb2.User))
"""

from .base import Serializer, SerializerRegistry, derive_tag, registry
from .json import JSONSerializer
from .msgpack import MsgpackSerializer
from .pickle import PickleSerializer
from .protobuf import ProtobufSerializer

__all__ = [
    "JSONSerializer",
    "MsgpackSerializer",
    "PickleSerializer",
    "ProtobufSerializer",
    "Serializer",
    "SerializerRegistry",
    "derive_tag",
    "registry",
]

registry.register("json", JSONSerializer())
registry.register("msgpack", MsgpackSerializer())
registry.register("pickle", PickleSerializer())
