"""Protobuf message classes for the serializer tests, built from descriptors at import time
(no protoc needed). They live in the default descriptor pool, like generated ``_pb2`` modules.

proto3 (``acacheorm_test/everything.proto``)::

    enum Color { COLOR_UNSPECIFIED = 0; RED = 1; GREEN = 2; }
    message Address { string city = 1; optional int32 zip = 2; }
    message Node { string label = 1; repeated Node children = 2; }
    message Everything {
      int32 i32 = 1;  int64 i64 = 2;  uint32 u32 = 3;  uint64 u64 = 4;  sint64 s64 = 5;
      fixed64 f64 = 6;  double dbl = 7;  float flt = 8;  bool flag = 9;  string text = 10;
      bytes blob = 11;  Color color = 12;
      optional string nickname = 13;  optional int64 score = 14;  optional bytes avatar = 15;
      optional bool active = 16;
      google.protobuf.StringValue email = 17;  google.protobuf.Int64Value visits = 18;
      google.protobuf.DoubleValue ratio = 19;  google.protobuf.BoolValue verified = 20;
      google.protobuf.BytesValue thumb = 21;   google.protobuf.FloatValue weight = 36;
      repeated string tags = 22;  repeated int64 numbers = 23;  repeated Address addresses = 24;
      repeated bytes chunks = 25;  Address home = 26;
      google.protobuf.Struct extra = 27;  google.protobuf.Value anything = 28;
      google.protobuf.ListValue items = 29;
      map<string, int64> counts = 30;  map<string, Address> places = 31;
      oneof contact { string phone = 32; string fax = 33; }
      repeated google.protobuf.StringValue aliases = 34;  Node tree = 35;
      map<int32, google.protobuf.Value> slots = 37;  repeated google.protobuf.Value values = 38;
    }

proto2 (``acacheorm_test/legacy.proto``)::

    enum Level { LOW = 1; HIGH = 2; }
    message Legacy {
      required int64 id = 1;  optional string name = 2 [default = "anon"];
      optional Level level = 3;  repeated int32 marks = 4;
    }
"""

from __future__ import annotations

from typing import Any

from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message_factory,
    struct_pb2,
    wrappers_pb2,
)

F = descriptor_pb2.FieldDescriptorProto
PACKAGE = "acacheorm_test"

# make sure the well-known types are in the default pool before files that depend on them
_DEPENDENCIES = (struct_pb2, wrappers_pb2)


def _field(
    message: Any,
    name: str,
    number: int,
    ftype: int,
    *,
    type_name: str | None = None,
    repeated: bool = False,
    optional: bool = False,
    oneof_index: int | None = None,
    default: str | None = None,
    label: int | None = None,
) -> None:
    field = message.field.add(name=name, number=number, type=ftype)
    field.label = (
        label if label is not None else (F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL)
    )
    if type_name is not None:
        field.type_name = type_name
    if default is not None:
        field.default_value = default
    if optional:  # proto3 `optional`: a synthetic oneof of its own
        field.proto3_optional = True
        field.oneof_index = len(message.oneof_decl)
        message.oneof_decl.add(name=f"_{name}")
    elif oneof_index is not None:
        field.oneof_index = oneof_index


def _map_entry(
    message: Any,
    entry_name: str,
    key_type: int,
    value_type: int,
    value_type_name: str | None = None,
) -> str:
    entry = message.nested_type.add(name=entry_name)
    entry.options.map_entry = True
    _field(entry, "key", 1, key_type)
    _field(entry, "value", 2, value_type, type_name=value_type_name)
    return f".{PACKAGE}.{message.name}.{entry_name}"


def _everything_file() -> descriptor_pb2.FileDescriptorProto:
    fp = descriptor_pb2.FileDescriptorProto(
        name="acacheorm_test/everything.proto",
        package=PACKAGE,
        syntax="proto3",
        dependency=["google/protobuf/struct.proto", "google/protobuf/wrappers.proto"],
    )
    color = fp.enum_type.add(name="Color")
    for number, name in enumerate(["COLOR_UNSPECIFIED", "RED", "GREEN"]):
        color.value.add(name=name, number=number)

    address = fp.message_type.add(name="Address")
    _field(address, "city", 1, F.TYPE_STRING)
    _field(address, "zip", 2, F.TYPE_INT32, optional=True)

    node = fp.message_type.add(name="Node")
    _field(node, "label", 1, F.TYPE_STRING)
    _field(node, "children", 2, F.TYPE_MESSAGE, type_name=f".{PACKAGE}.Node", repeated=True)

    m = fp.message_type.add(name="Everything")
    # the real oneof first, so its index is 0; proto3 `optional` fields add theirs after it
    m.oneof_decl.add(name="contact")
    scalars = [
        ("i32", F.TYPE_INT32),
        ("i64", F.TYPE_INT64),
        ("u32", F.TYPE_UINT32),
        ("u64", F.TYPE_UINT64),
        ("s64", F.TYPE_SINT64),
        ("f64", F.TYPE_FIXED64),
        ("dbl", F.TYPE_DOUBLE),
        ("flt", F.TYPE_FLOAT),
        ("flag", F.TYPE_BOOL),
        ("text", F.TYPE_STRING),
        ("blob", F.TYPE_BYTES),
    ]
    for number, (name, ftype) in enumerate(scalars, start=1):
        _field(m, name, number, ftype)
    _field(m, "color", 12, F.TYPE_ENUM, type_name=f".{PACKAGE}.Color")
    _field(m, "nickname", 13, F.TYPE_STRING, optional=True)
    _field(m, "score", 14, F.TYPE_INT64, optional=True)
    _field(m, "avatar", 15, F.TYPE_BYTES, optional=True)
    _field(m, "active", 16, F.TYPE_BOOL, optional=True)
    wrappers = [
        ("email", 17, "StringValue"),
        ("visits", 18, "Int64Value"),
        ("ratio", 19, "DoubleValue"),
        ("verified", 20, "BoolValue"),
        ("thumb", 21, "BytesValue"),
        ("weight", 36, "FloatValue"),
    ]
    for name, number, wrapper in wrappers:
        _field(m, name, number, F.TYPE_MESSAGE, type_name=f".google.protobuf.{wrapper}")
    _field(m, "tags", 22, F.TYPE_STRING, repeated=True)
    _field(m, "numbers", 23, F.TYPE_INT64, repeated=True)
    _field(m, "addresses", 24, F.TYPE_MESSAGE, type_name=f".{PACKAGE}.Address", repeated=True)
    _field(m, "chunks", 25, F.TYPE_BYTES, repeated=True)
    _field(m, "home", 26, F.TYPE_MESSAGE, type_name=f".{PACKAGE}.Address")
    _field(m, "extra", 27, F.TYPE_MESSAGE, type_name=".google.protobuf.Struct")
    _field(m, "anything", 28, F.TYPE_MESSAGE, type_name=".google.protobuf.Value")
    _field(m, "items", 29, F.TYPE_MESSAGE, type_name=".google.protobuf.ListValue")
    counts = _map_entry(m, "CountsEntry", F.TYPE_STRING, F.TYPE_INT64)
    _field(m, "counts", 30, F.TYPE_MESSAGE, type_name=counts, repeated=True)
    places = _map_entry(m, "PlacesEntry", F.TYPE_STRING, F.TYPE_MESSAGE, f".{PACKAGE}.Address")
    _field(m, "places", 31, F.TYPE_MESSAGE, type_name=places, repeated=True)
    _field(m, "phone", 32, F.TYPE_STRING, oneof_index=0)
    _field(m, "fax", 33, F.TYPE_STRING, oneof_index=0)
    _field(
        m, "aliases", 34, F.TYPE_MESSAGE, type_name=".google.protobuf.StringValue", repeated=True
    )
    _field(m, "tree", 35, F.TYPE_MESSAGE, type_name=f".{PACKAGE}.Node")
    slots = _map_entry(m, "SlotsEntry", F.TYPE_INT32, F.TYPE_MESSAGE, ".google.protobuf.Value")
    _field(m, "slots", 37, F.TYPE_MESSAGE, type_name=slots, repeated=True)
    _field(m, "values", 38, F.TYPE_MESSAGE, type_name=".google.protobuf.Value", repeated=True)
    return fp


def _legacy_file() -> descriptor_pb2.FileDescriptorProto:
    fp = descriptor_pb2.FileDescriptorProto(
        name="acacheorm_test/legacy.proto", package=PACKAGE, syntax="proto2"
    )
    level = fp.enum_type.add(name="Level")
    level.value.add(name="LOW", number=1)
    level.value.add(name="HIGH", number=2)
    m = fp.message_type.add(name="Legacy")
    _field(m, "id", 1, F.TYPE_INT64, label=F.LABEL_REQUIRED)
    _field(m, "name", 2, F.TYPE_STRING, default="anon")
    _field(m, "level", 3, F.TYPE_ENUM, type_name=f".{PACKAGE}.Level")
    _field(m, "marks", 4, F.TYPE_INT32, repeated=True)
    return fp


def _model_file() -> descriptor_pb2.FileDescriptorProto:
    """``AllFields``: one field per acacheorm field type (tests/test_roundtrip.py)."""
    fp = descriptor_pb2.FileDescriptorProto(
        name="acacheorm_test/allfields.proto",
        package=PACKAGE,
        syntax="proto3",
        dependency=["google/protobuf/struct.proto"],
    )
    m = fp.message_type.add(name="AllFields")
    optional = [
        ("id", F.TYPE_INT64),
        ("integer", F.TYPE_SINT64),
        ("float", F.TYPE_DOUBLE),
        ("decimal", F.TYPE_STRING),
        ("boolean", F.TYPE_BOOL),
        ("string", F.TYPE_STRING),
        ("binary", F.TYPE_BYTES),
        ("uuid", F.TYPE_STRING),
        ("shortuuid", F.TYPE_STRING),
        ("enum", F.TYPE_INT32),
        ("datetime", F.TYPE_STRING),
        ("datetimetz", F.TYPE_STRING),
        ("date", F.TYPE_STRING),
        ("time", F.TYPE_STRING),
        ("timestamp", F.TYPE_SINT64),
    ]
    number = 0
    for number, (name, ftype) in enumerate(optional, start=1):
        _field(m, name, number, ftype, optional=True)
    _field(m, "json", number + 1, F.TYPE_MESSAGE, type_name=".google.protobuf.Value")
    _field(m, "list", number + 2, F.TYPE_STRING, repeated=True)
    _field(m, "list_decimal", number + 3, F.TYPE_STRING, repeated=True)
    _field(m, "list_binary", number + 4, F.TYPE_BYTES, repeated=True)
    _field(m, "list_of_lists", number + 5, F.TYPE_MESSAGE, type_name=".google.protobuf.ListValue")
    _field(m, "struct", number + 6, F.TYPE_MESSAGE, type_name=".google.protobuf.ListValue")
    return fp


def _build() -> tuple[Any, ...]:
    pool = descriptor_pool.Default()
    for fp in (_everything_file(), _legacy_file(), _model_file()):
        pool.Add(fp)
    names = ["Everything", "Address", "Node", "Legacy", "AllFields"]
    return tuple(
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.{n}")) for n in names
    )


Everything, Address, Node, Legacy, AllFields = _build()
