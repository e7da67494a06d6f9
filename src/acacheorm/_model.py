"""ModelMeta and Model: declaring models, instances, and the query entry points."""

from __future__ import annotations

import datetime
import decimal
import enum
import sys
import types
import typing
import uuid
import warnings
import weakref
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, ClassVar, Never, Self, dataclass_transform

from ._exceptions import ConfigurationError, DoesNotExist, KeyClashWarning, ValidationError
from ._fields import (
    BinaryField,
    BooleanField,
    DateField,
    DateTimeField,
    DecimalField,
    EnumField,
    Field,
    FloatField,
    IntegerField,
    JSONField,
    ListField,
    StringField,
    StructField,
    TimeField,
    UUIDField,
)
from ._index import setup_indexes
from ._relations import ForeignKeyField, install_pending_reverse
from ._schema import NamedSchema, Schema
from ._types import NOTHING
from .backends.base import Backend, normalize_ttl
from .serializers import Serializer, registry

if TYPE_CHECKING:
    from ._filter import FilterQuery, FilterResult, UpdateOrCreateQuery
    from ._lookups import Condition
    from ._query import (
        DeleteQuery,
        GetOrCreateQuery,
        InsertQuery,
        Query,
        RemainingTTLQuery,
        SelectQuery,
        TouchQuery,
        UpdateQuery,
    )

META_OPTIONS = frozenset(
    {
        "backend",
        "serializer",
        "ttl",
        "primary_key",
        "name",
        "namespace",
        "key_format",
        "abstract",
        "read_serializers",
    }
)

#: Every concrete model by class name (and by "module.Name"), for ForeignKeyField("Name").
_models_by_name: dict[str, list[type[Model]]] = {}


class CompositeKey:
    """A primary key made of several fields, for ``Meta.primary_key``.

    ``key_format`` (optional) is a ``%``-format string or a callable taking the pk values.

    Example::

        class Collection(co.Model):
            collector = co.ForeignKeyField(User)
            article = co.ForeignKeyField(Article)

            class Meta:
                primary_key = co.CompositeKey("collector", "article")
    """

    def __init__(self, *names: str, key_format: str | Callable[..., str] | None = None) -> None:
        if len(names) < 2:
            raise TypeError("CompositeKey needs at least two field names")
        if len(set(names)) != len(names) or not all(isinstance(n, str) for n in names):
            raise TypeError(f"CompositeKey field names must be distinct strings: {names!r}")
        self.names = names
        self.key_format = key_format

    def __repr__(self) -> str:
        return f"CompositeKey{self.names!r}"


#: Keywords that writes take (``create(..., ttl=60)``): a field of that name would be
#: swallowed by the keyword.
_WRITE_KEYWORDS = frozenset({"ttl", "defaults", "atomic", "force_insert"})

_RESERVED = _WRITE_KEYWORDS | frozenset(
    {
        "pk",
        "save",
        "delete_instance",
        "refresh",
        "load",
        "to_dict",
        "from_dict",
        "create",
        "insert",
        "insert_many",
        "get",
        "get_by_id",
        "get_or_none",
        "get_or_create",
        "update_or_create",
        "query",
        "query_many",
        "update",
        "update_many",
        "set_by_id",
        "delete",
        "delete_by_id",
        "delete_many",
        "filter",
        "exclude",
        "all",
        "count",
        "first",
        "order_by",
        "limit",
        "offset",
        "touch",
        "remaining_ttl",
        "objects",
        "DoesNotExist",
        "MultipleObjectsReturned",
        "Meta",
        "is_sparse",
        "pydantic_model",
    }
)


def _meta_options(cls_name: str, bases: tuple[type, ...], meta: Any) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for base in reversed(bases):
        inherited = getattr(base, "_meta_options", None)
        if inherited:
            options.update(inherited)
    options.pop("abstract", None)
    # A subclass is another model: it gets its own key name unless it sets one.
    options.pop("name", None)
    if meta is not None:
        for key, value in vars(meta).items():
            if key.startswith("__"):
                continue
            if key not in META_OPTIONS:
                raise ConfigurationError(
                    f"{cls_name}.Meta: unknown option {key!r} "
                    f"(options are {', '.join(sorted(META_OPTIONS))})"
                )
            options[key] = value
    return options


def _resolve_serializer(cls_name: str, value: Any, option: str = "serializer") -> Serializer:
    serializer = _find_serializer(cls_name, value, option)
    try:
        serializer.check_available()
    except ConfigurationError as exc:
        raise ConfigurationError(f"{cls_name}.Meta.{option} {value!r}: {exc}") from exc
    return serializer


def _find_serializer(cls_name: str, value: Any, option: str) -> Serializer:
    if isinstance(value, Serializer):
        return value
    if isinstance(value, str):
        try:
            return registry.get_by_name(value)
        except KeyError:
            raise ConfigurationError(
                f"{cls_name}.Meta.{option}: unknown serializer {value!r} "
                f"(registered: {', '.join(sorted(registry.names()))})"
            ) from None
    raise ConfigurationError(
        f"{cls_name}.Meta.{option} must be a registered name or a Serializer, not {value!r}"
    )


def _resolve_read_serializers(
    cls_name: str, value: Any, serializer: Serializer
) -> tuple[Serializer, ...]:
    """``Meta.read_serializers``: the serializers (besides its own) whose payloads a model
    reads, resolved now; two different serializers with one tag are refused."""
    if value is None:
        return ()
    if isinstance(value, str | Serializer) or not isinstance(value, list | tuple):
        raise ConfigurationError(
            f"{cls_name}.Meta.read_serializers must be a list or tuple of serializer names "
            f"or Serializer instances, not {value!r}"
        )
    out: list[Serializer] = []
    by_tag = {serializer.tag: serializer}
    for item in value:
        resolved = _resolve_serializer(cls_name, item, "read_serializers")
        other = by_tag.get(resolved.tag)
        if other is not None and other is not resolved:
            raise ConfigurationError(
                f"{cls_name}.Meta.read_serializers: {resolved!r} has the tag "
                f"{resolved.tag:#06x} of {other!r}, so their payloads cannot be told apart"
            )
        if other is None:
            by_tag[resolved.tag] = resolved
            out.append(resolved)
    return tuple(out)


def _check_enum_keys(cls_name: str, fields: dict[str, Field[Any]], pk_names: Any) -> None:
    """An EnumField in a primary key whose members' values are the same text (``1`` and
    ``"1"``) would store two members under one key: refused at definition."""
    for name in pk_names:
        field = fields[name]
        if not isinstance(field, EnumField):
            continue
        seen: dict[str, Any] = {}
        for member in field.enum_cls:
            text = field.key_part(member)
            if text in seen:
                raise ConfigurationError(
                    f"{cls_name}.{name}: the members {seen[text]!r} and {member!r} of "
                    f"{field.enum_cls.__name__} have values that read the same as text "
                    f"({text!r}), so as part of the primary key they would be stored under "
                    "one key; give them distinct values"
                )
            seen[text] = member


#: Live models by backend and key prefix, to warn when two modules' models share keys.
_models_by_prefix: weakref.WeakKeyDictionary[Backend, dict[str, weakref.ref[type[Model]]]] = (
    weakref.WeakKeyDictionary()
)


#: The same for models whose ``Meta.backend`` is a name configured at start-up.
_models_by_backend_name: dict[str, dict[str, weakref.ref[type[Model]]]] = {}


def _check_key_clash(cls: type[Model]) -> None:
    """Warn (`KeyClashWarning`) when a live model of another module stores its rows under
    the same key prefix on the same backend: the two would read and overwrite each other's
    rows. A model redefined in its own module (a re-run notebook cell) replaces the old one."""
    schema = cls._schema
    if schema.key_format is not None:
        return  # keys come from the format: the prefix alone says nothing
    if schema.backend_name is not None:  # a named backend: the name is the backend
        models = _models_by_backend_name.setdefault(schema.backend_name, {})
    else:
        try:
            models = _models_by_prefix.setdefault(schema.backend, {})
        except TypeError:  # a backend class that is not hashable or weakly referable
            return
    previous = models.get(schema.prefix)
    other = previous() if previous is not None else None
    if other is not None and other.__module__ != cls.__module__:
        warnings.warn(
            f"{cls.__module__}.{cls.__qualname__} and {other.__module__}."
            f"{other.__qualname__} store their rows under the same keys "
            f"({schema.prefix!r}...) on {schema.backend_name or schema.backend!r}: each reads "
            "and overwrites the other's rows. Give one of them another Meta.name or Meta.namespace",
            KeyClashWarning,
            stacklevel=3,
        )
        return  # the first model keeps the prefix: a third module's model is warned too
    models[schema.prefix] = weakref.ref(cls)


class _Namespace(dict[str, Any]):
    """A class body's namespace that remembers the order in which names are declared,
    annotation-only names (``name: str``) included, so fields keep their declaration order
    whichever style declares them."""

    def __init__(self) -> None:
        super().__init__()
        self.order: dict[str, None] = {}

    def __setitem__(self, key: str, value: Any) -> None:
        if key == "__annotations__" and isinstance(value, dict) and not value:
            value = _Annotations(self.order)
        self.order.setdefault(key, None)
        super().__setitem__(key, value)


class _Annotations(dict[str, Any]):
    def __init__(self, order: dict[str, None]) -> None:
        super().__init__()
        self._order = order

    def __setitem__(self, key: str, value: Any) -> None:
        self._order.setdefault(key, None)
        super().__setitem__(key, value)


class _AbstractSchema:
    """``_schema`` of an abstract model: any use says the model is abstract."""

    def __get__(self, instance: object, owner: type) -> Schema:
        raise ConfigurationError(
            f"{owner.__name__} is abstract (Meta.abstract = True, or the co.Model base class): "
            "it has no backend or key, so it cannot run queries or build instances; use a "
            "concrete subclass"
        )


def concrete_schema(cls: type) -> Schema | None:
    """The schema of a concrete model class, ``None`` for an abstract one."""
    schema = cls.__dict__.get("_schema")
    return schema if isinstance(schema, Schema) else None


# A dataclass_transform: type checkers build each model's constructor from its annotated
# fields (``Player(nik="a")`` and ``Player(nick=1)`` are type errors; ``player.email`` is
# ``str | None``). The field classes are deliberately not listed as field specifiers: to a
# checker a field object is then a default, so fields the library fills (``null=True``,
# ``auto_now_add``, a generated key) are not wrongly required; the library itself checks
# at run time that every required value is given. Fields declared without an annotation
# are not part of the checked constructor.
@dataclass_transform(kw_only_default=True)
class ModelMeta(type):
    """Builds the frozen `Schema` of each model class at definition time."""

    _schema: Schema
    _meta_options: dict[str, Any]

    @classmethod
    def __prepare__(
        mcs, name: str, bases: tuple[type, ...], /, **kw: Any
    ) -> MutableMapping[str, object]:
        return _Namespace()

    def __new__(mcs, name: str, bases: tuple[type, ...], ns: dict[str, Any], **kw: Any) -> Any:
        order = list(getattr(ns, "order", ns))
        ns = dict(ns)
        meta = ns.pop("Meta", None)
        if not any(isinstance(b, ModelMeta) for b in bases):
            return super().__new__(mcs, name, bases, ns, **kw)  # the Model base class itself
        options = _meta_options(name, bases, meta)
        abstract = bool(meta is not None and getattr(meta, "abstract", False))
        inherited: dict[str, Field[Any]] = {}
        for base in bases:
            schema = concrete_schema(base)
            inherited.update(
                schema.fields if schema is not None else getattr(base, "_abstract_fields", {})
            )
        own = _own_fields(name, ns, order, inherited)

        # Fields: inherited ones first (copied, so each model owns its fields), then own ones.
        # A subclass that declares a primary key (a field or Meta.primary_key) replaces the
        # inherited one: an inherited pk field becomes a plain field (an implicit ``id`` goes).
        own_pk = any(f.primary_key for f in own.values())
        own_composite = meta is not None and "primary_key" in vars(meta)
        if own_pk and not own_composite:
            options.pop("primary_key", None)
        fields: dict[str, Field[Any]] = {}
        for base in reversed(bases):
            schema = concrete_schema(base)
            parent_fields = (
                schema.fields if schema is not None else getattr(base, "_abstract_fields", {})
            )
            for fname, field in parent_fields.items():
                copied = _copy_field(field)
                if (own_pk or own_composite) and copied.primary_key:
                    if getattr(field, "_implicit_pk", False):
                        continue
                    copied.primary_key = False
                fields[fname] = copied
        fields.update(own)  # an overridden field keeps its place
        ns.update(fields)  # inherited field copies become attributes of this class too

        cls: Any = super().__new__(mcs, name, bases, ns, **kw)  # attributes set dynamically
        cls._meta_options = dict(options)
        for fname, field in fields.items():
            field.__set_name__(cls, fname)
            field.model = cls
        parent_dne = tuple(
            dne for b in bases if isinstance(dne := getattr(b, "DoesNotExist", None), type)
        ) or (DoesNotExist,)
        cls.DoesNotExist = type(
            "DoesNotExist",
            parent_dne,
            {
                "__module__": cls.__module__,
                "__qualname__": f"{cls.__qualname__}.DoesNotExist",
            },
        )
        if abstract:
            cls._abstract_fields = fields
            cls._schema = _AbstractSchema()
            return cls

        # Primary key: explicit field(s), a CompositeKey, or an implicit UUID ``id``.
        pk_fields = [n for n, f in fields.items() if f.primary_key]
        composite = options.get("primary_key")
        if composite is not None:
            if not isinstance(composite, CompositeKey):
                raise ConfigurationError(f"{name}.Meta.primary_key must be a CompositeKey")
            if pk_fields and set(pk_fields) - set(composite.names):
                raise ConfigurationError(
                    f"{name}: two primary keys (field {pk_fields[0]!r} and Meta.primary_key)"
                )
            for part in composite.names:
                if part not in fields:
                    raise ConfigurationError(f"{name}.Meta.primary_key: no field named {part!r}")
                if fields[part].null:
                    raise ConfigurationError(f"{name}.{part}: a primary key part cannot be null")
            pk_names = composite.names
        elif len(pk_fields) > 1:
            raise ConfigurationError(
                f"{name}: two primary keys ({', '.join(pk_fields)}); use Meta.primary_key = "
                "co.CompositeKey(...) for a composite key"
            )
        elif pk_fields:
            pk_names = (pk_fields[0],)
        else:
            if "id" in fields:
                raise ConfigurationError(
                    f"{name}: field 'id' is not a primary key, and no other field is"
                )
            field = UUIDField(primary_key=True, default=uuid.uuid4)
            field._implicit_pk = True
            field.__set_name__(cls, "id")
            field.model = cls
            cls.id = field
            fields = {"id": field, **fields}
            pk_names = ("id",)

        backend = options.get("backend")
        if backend is None:
            raise ConfigurationError(
                f"{name}.Meta.backend is missing (a co.*Backend instance, or the name of one "
                "configured with co.backends.configure)"
            )
        if isinstance(backend, str):
            if not backend or "://" in backend:
                raise ConfigurationError(
                    f"{name}.Meta.backend must be a backend or the name of one configured at "
                    f"start-up, not {backend!r} (configure a URL under a name: "
                    "co.backends.configure(main=url), then backend = 'main')"
                )
        elif not isinstance(backend, Backend):
            raise ConfigurationError(
                f"{name}.Meta.backend must be a backend or a backend name, not {backend!r}"
            )
        if options.get("serializer") is None:
            raise ConfigurationError(f"{name}.Meta.serializer is missing (e.g. 'msgpack')")
        serializer = _resolve_serializer(name, options["serializer"])
        read_serializers = _resolve_read_serializers(
            name, options.get("read_serializers"), serializer
        )
        _check_enum_keys(name, fields, pk_names)
        try:
            ttl = normalize_ttl(options.get("ttl"))
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"{name}.Meta.ttl: {exc}") from None
        model_name = options.get("name", name.lower())
        namespace = options.get("namespace", "")
        for opt, val in (("name", model_name), ("namespace", namespace)):
            if not isinstance(val, str):
                raise ConfigurationError(f"{name}.Meta.{opt} must be a str, not {val!r}")
        key_format = options.get("key_format")
        if key_format is None and isinstance(composite, CompositeKey):
            key_format = composite.key_format
        if key_format is not None and not (isinstance(key_format, str) or callable(key_format)):
            raise ConfigurationError(f"{name}.Meta.key_format must be a %-string or a callable")
        if isinstance(key_format, str):
            _check_key_format(name, key_format, len(pk_names))

        cls._schema = (NamedSchema if isinstance(backend, str) else Schema)(
            model=cls,
            name=model_name,
            namespace=namespace,
            fields=fields,
            pk_names=tuple(pk_names),
            composite=len(pk_names) > 1,
            backend=backend,
            serializer=serializer,
            ttl=ttl,
            key_format=key_format,
            read_serializers=read_serializers,
        )
        cls._settable = frozenset(cls._schema.attnames) | frozenset(cls._schema.attnames.values())
        for field in fields.values():
            contribute = getattr(field, "contribute_to_class", None)
            if contribute is not None:
                contribute(cls)
        _check_key_clash(cls)
        _models_by_name.setdefault(name, []).append(cls)
        _models_by_name.setdefault(f"{cls.__module__}.{name}", []).append(cls)
        install_pending_reverse(cls)
        setup_indexes(cls)
        return cls


def _own_fields(
    name: str, ns: dict[str, Any], order: list[str], inherited: dict[str, Field[Any]]
) -> dict[str, Field[Any]]:
    """The fields a class body declares, in declaration order: field objects, annotated
    field objects (the annotation checked against the field) and bare annotations of
    supported types. A bare annotation of an inherited field (for type checkers) only
    checks it."""
    for key, value in ns.items():
        if isinstance(value, type) and issubclass(value, Field):
            raise ConfigurationError(
                f"{name}.{key} = {value.__name__} is the field class, not a field: "
                f"call it, {key} = co.{value.__name__}(...)"
            )
    annotations = ns.get("__annotations__") or {}
    if not annotations and "__annotate__" in ns:  # Python 3.14: annotations are lazy
        import annotationlib  # type: ignore[import-not-found, unused-ignore]

        annotations = annotationlib.call_annotate_function(  # pragma: no cover
            ns["__annotate__"], annotationlib.Format.FORWARDREF
        )
    resolver = _AnnotationResolver(name, ns)
    own: dict[str, Field[Any]] = {}
    for fname in [*order, *(k for k in annotations if k not in order)]:
        value = ns.get(fname)
        annotated = fname in annotations
        if not isinstance(value, Field):
            if not annotated or fname.startswith("_"):
                continue
            hint = resolver.resolve(fname, annotations[fname])
            if hint is _NOT_A_FIELD:
                continue
            if fname not in ns and fname in inherited:
                _check_annotation(name, fname, hint, inherited[fname])
                continue
            if fname in ns and (
                callable(value) or isinstance(value, property | classmethod | staticmethod)
            ):
                continue  # an annotated method or property is not a field
            value = _field_for(name, fname, hint, ns.get(fname, _NO_DEFAULT))
        elif annotated:
            hint = resolver.resolve(fname, annotations[fname])
            if hint is _NOT_A_FIELD:
                raise ConfigurationError(
                    f"{name}.{fname}: a field cannot be annotated ClassVar/Final"
                )
            _check_annotation(name, fname, hint, value)
        if fname in _RESERVED or fname.startswith("_"):
            why = (
                f"writes take {fname}= as a keyword"
                if fname in _WRITE_KEYWORDS
                else "the model uses that name"
                if fname in _RESERVED
                else "names starting with '_' are the model's own"
            )
            raise ConfigurationError(f"{name}: a field cannot be named {fname!r} ({why})")
        own[fname] = value
    return own


# -- annotated declarations ----------------------------------------------------------------

_NOT_A_FIELD: Any = object()
_NO_DEFAULT: Any = object()
_UNRESOLVED = "unresolved"

#: A bare annotation's type → the field it declares.
_FIELD_FOR_TYPE: dict[Any, Callable[..., Field[Any]]] = {
    int: IntegerField,
    float: FloatField,
    str: StringField,
    bool: BooleanField,
    bytes: BinaryField,
    decimal.Decimal: DecimalField,
    uuid.UUID: UUIDField,
    datetime.datetime: DateTimeField,
    datetime.date: DateField,
    datetime.time: TimeField,
}


class _AnnotationResolver:
    """Evaluates a class body's annotations (strings under ``from __future__ import
    annotations``) in the module's globals, the class body and the enclosing function."""

    def __init__(self, cls_name: str, ns: dict[str, Any]) -> None:
        self.cls_name = cls_name
        module = sys.modules.get(ns.get("__module__", ""))
        self.globals = dict(vars(module)) if module is not None else {}
        self.locals: dict[str, Any] = {}
        try:
            frame = sys._getframe(3)  # the frame running the class statement
        except ValueError:  # pragma: no cover - no such frame
            frame = None
        if frame is not None and frame.f_code.co_filename != __file__:
            self.globals = frame.f_globals  # the class statement's own globals
            if frame.f_locals is not frame.f_globals:
                self.locals.update(frame.f_locals)  # a model defined inside a function
        self.locals.update(ns)

    def resolve(self, fname: str, annotation: Any) -> Any:
        if isinstance(annotation, str):
            if annotation.replace("typing.", "").startswith(("ClassVar", "Final")):
                return _NOT_A_FIELD
            try:
                annotation = eval(annotation, self.globals, self.locals)
            except NameError:
                return (_UNRESOLVED, annotation)
            except Exception as exc:
                raise ConfigurationError(
                    f"{self.cls_name}.{fname}: cannot read the annotation {annotation!r}: {exc}"
                ) from None
        origin = typing.get_origin(annotation)
        if annotation is ClassVar or origin is ClassVar:
            return _NOT_A_FIELD
        if annotation is typing.Final or origin is typing.Final:
            return _NOT_A_FIELD
        return annotation


def _split_optional(hint: Any) -> tuple[Any, bool]:
    """``X | None`` / ``Optional[X]`` → ``(X, True)``; anything else → ``(hint, False)``."""
    origin = typing.get_origin(hint)
    if origin is typing.Annotated:
        return _split_optional(typing.get_args(hint)[0])
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) != len(typing.get_args(hint)):
            inner = args[0] if len(args) == 1 else typing.Union[tuple(args)]  # noqa: UP007
            return inner, True
    return hint, False


def _unresolved_model_name(hint: Any) -> str | None:
    """A forward reference to a model (``"Author"``, ``"Author | None"``): its name."""
    if not (isinstance(hint, tuple) and hint and hint[0] == _UNRESOLVED):
        return None
    text: str = hint[1].strip()
    for suffix in ("| None", "|None"):
        if text.endswith(suffix):
            text = text[: -len(suffix)].strip()
    if text.startswith("Optional[") and text.endswith("]"):
        text = text[len("Optional[") : -1].strip()
    text = text.strip("'\"")
    # A model's name: an identifier (maybe dotted) whose last part is capitalised, as class
    # names are; anything else undefined (a type imported only for type checkers) is an error.
    if text.replace(".", "").isidentifier() and text.rpartition(".")[2][:1].isupper():
        return text
    return None


def _unresolved_is_optional(hint: Any) -> bool:
    text: str = hint[1].replace(" ", "")
    return text.endswith("|None") or text.startswith("Optional[")


def _field_for(cls_name: str, fname: str, hint: Any, default: Any) -> Field[Any]:
    """The field a bare annotation declares (``bio: str | None = None``)."""
    options: dict[str, Any] = {}
    if default is not _NO_DEFAULT:
        options["default"] = default
    model_name = _unresolved_model_name(hint)
    if model_name is not None:
        to = "self" if model_name == cls_name else model_name
        return ForeignKeyField(to, null=_unresolved_is_optional(hint), **options)
    if isinstance(hint, tuple) and hint and hint[0] == _UNRESOLVED:
        raise ConfigurationError(
            f"{cls_name}.{fname}: the annotation {hint[1]!r} names something undefined"
        )
    inner, null = _split_optional(hint)
    try:
        return _make_field(inner, null, options)
    except _Unsupported:
        raise ConfigurationError(
            f"{cls_name}.{fname}: {_hint_name(hint)} is not a type a bare annotation can "
            "declare (int, float, str, bool, bytes, Decimal, UUID, datetime, date, time, an "
            "Enum, list[T], dict[str, Any], a model); assign a field: "
            f"{fname}: ... = co.SomeField(...)"
        ) from None


class _Unsupported(Exception):
    pass


def _make_field(hint: Any, null: bool, options: dict[str, Any]) -> Field[Any]:
    if null:
        options["null"] = True
    factory = _FIELD_FOR_TYPE.get(hint)
    if factory is not None:
        return factory(**options)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return EnumField(hint, **options)
    if isinstance(hint, type) and issubclass(hint, Model) and hint is not Model:
        return ForeignKeyField(hint, **options)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is list or origin is list:
        if not args:
            raise _Unsupported
        item, item_null = _split_optional(args[0])
        return ListField(_make_field(item, item_null, {}), **options)
    if hint is dict or origin is dict:
        if args and args[0] is not str:
            raise _Unsupported
        return JSONField(**options)
    raise _Unsupported


def _hint_name(hint: Any) -> str:
    if isinstance(hint, tuple) and hint and hint[0] == _UNRESOLVED:
        return repr(hint[1])
    if isinstance(hint, type):
        return hint.__qualname__
    return repr(hint).replace("typing.", "")


def _check_annotation(cls_name: str, fname: str, hint: Any, field: Field[Any]) -> None:
    """An annotation must say what the field holds (``age: str = co.IntegerField()`` is
    an error), ``X | None`` exactly when the field is ``null=True``."""
    if isinstance(hint, tuple) and hint and hint[0] == _UNRESOLVED:
        if isinstance(field, ForeignKeyField) and _unresolved_is_optional(hint) != field.null:
            _mismatch(cls_name, fname, hint, field, nullable=True)
        return  # a forward reference (a model defined later): nothing more to check
    inner, null = _split_optional(hint)
    if inner is Any:
        return
    if null != field.null:
        _mismatch(cls_name, fname, hint, field, nullable=True)
    if not _fits(inner, field):
        _mismatch(cls_name, fname, hint, field)


def _fits(hint: Any, field: Field[Any]) -> bool:
    if hint is Any or isinstance(field, JSONField | StructField):
        return True
    if isinstance(field, ForeignKeyField):
        to = field.to
        if isinstance(to, str):
            return isinstance(hint, type) and issubclass(hint, Model)
        return hint is to
    if isinstance(field, ListField):
        origin = typing.get_origin(hint)
        if hint is list:
            return True
        if origin is not list:
            return False
        item, item_null = _split_optional(typing.get_args(hint)[0])
        return (item_null or not field.field.null) and _fits(item, field.field)
    expected = field.python_type
    if isinstance(expected, tuple):
        return hint in expected
    return hint is expected


def _mismatch(
    cls_name: str, fname: str, hint: Any, field: Field[Any], nullable: bool = False
) -> None:
    if nullable:
        detail = (
            "the field is null=True: annotate it 'X | None'"
            if field.null
            else "the annotation allows None: give the field null=True"
        )
    else:
        detail = f"the field holds {_field_type_name(field)}"
    raise ConfigurationError(
        f"{cls_name}.{fname}: the annotation {_hint_name(hint)} does not match "
        f"{type(field).__name__} ({detail})"
    )


def _field_type_name(field: Field[Any]) -> str:
    if isinstance(field, ForeignKeyField):
        to = field.to
        return f"a {to if isinstance(to, str) else to.__name__}"
    t = field.python_type
    return " or ".join(x.__name__ for x in t) if isinstance(t, tuple) else t.__name__


def _check_key_format(name: str, key_format: str, arity: int) -> None:
    """A %-format must take exactly the pk values (ints for %d, anything for %s)."""
    errors = []
    for sample in ((0,) * arity, ("x",) * arity):
        try:
            key_format % sample
            return
        except (TypeError, ValueError) as exc:
            errors.append(exc)
    raise ConfigurationError(
        f"{name}.Meta.key_format {key_format!r} does not take the {arity} primary key "
        f"value(s): {errors[-1]}"
    )


def _copy_field(field: Field[Any]) -> Field[Any]:
    new = object.__new__(type(field))
    new.__dict__.update(field.__dict__)
    return new


def lookup_model(name: str, module: str | None = None, where: str = "") -> type[Model]:
    """The model called ``name`` (or ``"module.Name"``) for a foreign key declared in
    ``module``: a model of that name in ``module`` first (its latest definition, for a
    notebook that redefines it); else the only module that has one. Two other modules with
    one is a `ConfigurationError` naming both."""
    found = _models_by_name.get(name, [])
    if not found:
        raise LookupError(f"no model named {name!r} is defined")
    if module is not None:
        local = [m for m in found if m.__module__ == module]
        if local:
            return local[-1]
    modules = {m.__module__: m for m in found}  # the latest definition per module
    if len(modules) > 1:
        names = " and ".join(f"{m.__module__}.{m.__qualname__}" for m in modules.values())
        raise ConfigurationError(
            f"{where + ': ' if where else ''}the model name {name!r} is ambiguous ({names}); "
            "pass the class, or 'module.Name'"
        )
    return found[-1]


class _TouchMethod:
    """``touch``: ``Model.touch(ttl=, **pk)`` on the class, ``obj.touch(ttl=)`` on an
    instance (the instance's primary key)."""

    def __get__(
        self, instance: Model | None, owner: type[Model]
    ) -> Callable[..., TouchQuery[bool]]:
        def touch(*args: Any, ttl: Any = NOTHING, **pk: Any) -> TouchQuery[bool]:
            """Set the row's remaining lifetime (``ttl=None``: never expires; default: the
            model's ``Meta.ttl``) in one round trip; awaits to whether the row exists.

            Example::

                assert await Session.touch(id=sid, ttl=1800)   # sliding expiry
                await session.touch(ttl=1800)
            """
            from ._query import TouchQuery

            if args:
                raise _positional_error(owner, "touch", args)
            if instance is not None:
                if pk:
                    raise TypeError(
                        f"{owner.__name__}.touch() on an instance takes only ttl=, "
                        f"not {', '.join(sorted(pk))}"
                    )
                return TouchQuery(owner, owner._schema.pk_values(instance), ttl=ttl)
            return TouchQuery(owner, owner._pk_from_kwargs("touch", pk), ttl=ttl)

        touch.__qualname__ = f"{owner.__name__}.touch"
        return touch


def _check_conditions(cls: type[Model], method: str, conditions: tuple[Any, ...]) -> None:
    """Positional arguments of ``get``/``get_or_none`` are conditions (``User.age >= 18``);
    anything else (``User.get(1)``) is a primary key given the wrong way."""
    if conditions:
        from ._lookups import Condition

        if not all(isinstance(c, Condition) for c in conditions):
            raise _positional_error(cls, method, conditions)


def _positional_error(cls: type[Model], method: str, args: tuple[Any, ...]) -> TypeError:
    """``User.get(1)``: say which keywords to use instead."""
    schema = getattr(cls, "_schema", None)
    if schema is None:
        return TypeError(f"{cls.__name__}.{method}() takes keyword arguments only")
    names = schema.pk_names
    shown = ", ".join(f"{n}={a!r}" for n, a in zip(names, args, strict=False))
    hint = f"{cls.__name__}.{method}({shown})"
    if method == "update":
        hint = f"{cls.__name__}.update({shown}, field=value)"
    by_id = {"get": "get_by_id", "delete": "delete_by_id", "update": "set_by_id"}.get(method)
    if by_id is not None:
        value = args[0] if len(args) == 1 else tuple(args)
        extra = ", {...}" if method == "update" else ""
        hint += f" or {cls.__name__}.{by_id}({value!r}{extra})"
    return TypeError(
        f"{cls.__name__}.{method}() takes the primary key as keywords "
        f"({', '.join(names)}), not positionally: use {hint}"
    )


class Model(metaclass=ModelMeta):
    """Base class of every model.

    Example::

        class User(co.Model):
            id = co.IntegerField(primary_key=True)
            name = co.StringField(max_length=64)

            class Meta:
                backend = co.SimpleBackend()
                serializer = "msgpack"

        user = await User.create(id=1, name="Sam")
        assert (await User.get(id=1)).name == "Sam"
    """

    _schema: ClassVar[Schema]
    _settable: ClassVar[frozenset[str]] = frozenset()
    DoesNotExist: ClassVar[type[DoesNotExist]]

    def __init__(self, **kwargs: Any) -> None:
        schema = self._schema
        if "pk" in kwargs:
            kwargs = _expand_pk(schema, kwargs, f"{type(self).__name__}()")
        fields = schema.fields
        attnames = schema.attnames
        unknown = [k for k in kwargs if k not in fields and k not in schema.attnames_set]
        if unknown:
            raise TypeError(
                f"{type(self).__name__}() got unexpected keyword argument(s): "
                f"{', '.join(repr(k) for k in unknown)} (fields: {', '.join(fields)})"
            )
        d = self.__dict__
        for name, field in fields.items():
            attname = attnames[name]
            if name in kwargs:
                field.__set__(self, kwargs[name])
            elif attname in kwargs:
                field.__set__(self, kwargs[attname])
            elif field.has_default():
                d[attname] = field.clean(field.get_default())
            else:
                raise ValidationError("a value is required", model=type(self).__name__, field=name)

    if not TYPE_CHECKING:  # a type checker keeps reporting unknown attributes itself

        def __setattr__(self, name: str, value: Any) -> None:
            if name in type(self)._settable:
                object.__setattr__(self, name, value)
                return
            if name[:1] == "_" or hasattr(type(self), name):
                object.__setattr__(self, name, value)  # private state, a property, ...
                return
            raise AttributeError(
                f"{type(self).__name__} has no field {name!r} (fields: "
                f"{', '.join(self._schema.fields)}); nothing else is stored"
            )

    # -- instance state ---------------------------------------------------------------------

    @property
    def pk(self) -> Any:
        """The primary key: a value, or a tuple for a composite key."""
        schema = self._schema
        values = schema.pk_values(self)
        return values if schema.composite else values[0]

    @property
    def is_sparse(self) -> bool:
        """True for an instance holding only its primary key (an unloaded foreign key)."""
        return bool(self.__dict__.get("_sparse_"))

    def to_dict(self, mode: str = "python") -> dict[str, Any]:
        """The field values by field name (a foreign key gives the related primary key).

        ``mode="python"`` (the default) gives the Python values; ``mode="json"`` gives what
        `json.dumps` accepts: UUIDs, datetimes, dates, times and decimals as text (ISO 8601
        for times), bytes as base64, enums by value, lists item by item. `from_dict` takes
        either form back.

        Example::

            body = json.dumps(user.to_dict(mode="json"))
            assert User.from_dict(json.loads(body)) == user
        """
        schema = self._schema
        d = self.__dict__
        names = schema.pk_names if d.get("_sparse_") else tuple(schema.attnames)
        if mode == "python":
            return {n: d[schema.attnames[n]] for n in names}
        if mode != "json":
            raise ValueError(
                f"{type(self).__name__}.to_dict(): mode is 'python' or 'json', not {mode!r}"
            )
        fields = schema.fields
        out: dict[str, Any] = {}
        for n in names:
            value = d[schema.attnames[n]]
            out[n] = None if value is None else fields[n].to_json(value)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Build an (unsaved) instance from a dict of field values; validated.

        Takes the Python values, or the JSON form of `to_dict` (``mode="json"``: ISO text
        for datetimes, base64 for bytes, ...), field by field.

        Example::

            user = User.from_dict({"id": 1, "name": "Sam", "height": 1.8})
            same = User.from_dict(json.loads(json.dumps(user.to_dict(mode="json"))))
        """
        if not isinstance(data, Mapping):
            raise TypeError(
                f"{cls.__name__}.from_dict() takes a mapping, not {type(data).__name__}"
            )
        schema = cls._schema
        by_attname = {a: n for n, a in schema.attnames.items()}
        values: dict[str, Any] = {}
        for key, value in data.items():
            name = key if key in schema.fields else by_attname.get(key)
            if name is None or value is None:
                values[key] = value  # unknown keys are refused by the constructor
                continue
            field = schema.fields[name]
            try:
                field.clean(value)  # the Python form
            except Exception as exc:
                try:
                    value = field.from_json(value)
                except Exception:
                    raise exc from None
            values[key] = value
        return cls(**values)

    @classmethod
    def pydantic_model(
        cls, *, name: str | None = None, exclude: Iterable[str] = (), partial: bool = False
    ) -> type[Any]:
        """A pydantic model with this model's fields, for request/response schemas.

        ``partial=True`` makes every field optional (for PATCH bodies); ``exclude`` drops
        fields. Needs pydantic (``pip install 'acacheorm[pydantic]'``).

        Example::

            UserIn = User.pydantic_model(exclude=["created_at"])
            UserPatch = User.pydantic_model(partial=True, exclude=["id"])
        """
        from ._pydantic import pydantic_model

        return pydantic_model(cls, name=name, exclude=tuple(exclude), partial=partial)

    def __repr__(self) -> str:
        schema = self._schema
        d = self.__dict__
        pk = ", ".join(f"{n}={d.get(schema.attnames[n])!r}" for n in schema.pk_names)
        state = d.get("_sparse_")
        if state:
            return f"<{type(self).__name__} {pk} [{'missing' if state == 'missing' else 'sparse'}]>"
        rest = ", ".join(
            f"{n}={d.get(a)!r}" for n, a in schema.attnames.items() if n not in schema.pk_names
        )
        return f"<{type(self).__name__} {pk}{': ' + rest if rest else ''}>"

    def _repr_html_(self) -> str:
        from ._display import instances_html

        return instances_html([self])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Model) or type(other)._schema is not self._schema:
            return NotImplemented
        return self._schema.pk_values(self) == other._schema.pk_values(other)

    def __hash__(self) -> int:
        return hash((type(self), self._schema.pk_values(self)))

    # -- class-level queries ----------------------------------------------------------------

    @classmethod
    def _pk_from_kwargs(cls, method: str, kwargs: dict[str, Any]) -> tuple[Any, ...]:
        schema = cls._schema
        if "pk" in kwargs:
            if len(kwargs) == 1:
                return schema.normalize_pk(kwargs["pk"])
            kwargs = _expand_pk(schema, kwargs, f"{cls.__name__}.{method}()")
        allowed = set(schema.pk_names) | {schema.attnames[n] for n in schema.pk_names}
        extra = set(kwargs) - allowed
        if extra:
            raise TypeError(
                f"{cls.__name__}.{method}() takes only the primary key "
                f"({', '.join(schema.pk_names)}, or pk=); {', '.join(sorted(extra))} are not "
                "filters"
            )
        return schema.normalize_pk(kwargs)

    @classmethod
    def create(cls, *, ttl: Any = NOTHING, **fields: Any) -> InsertQuery[Self]:
        """Build and store an instance (overwrites an existing row); awaits to the instance.

        Example::

            user = await User.create(id=1, name="Sam", height=1.78)
        """
        from ._query import InsertQuery

        return InsertQuery(cls, [cls(**fields)], ttl=ttl, single=True)

    @classmethod
    def insert(cls, *, ttl: Any = NOTHING, **fields: Any) -> InsertQuery[Self]:
        """A query that stores one row (overwrites); awaits to the instance.

        Example::

            user = await User.insert(id=2, name="Kim", height=1.6)
        """
        from ._query import InsertQuery

        return InsertQuery(cls, [cls(**fields)], ttl=ttl, single=True)

    @classmethod
    def insert_many(
        cls, *rows: Mapping[str, Any] | Model, ttl: Any = NOTHING, atomic: bool = False
    ) -> InsertQuery[list[Self]]:
        """A query that stores many rows (dicts or instances) in one batch.

        Example::

            users = await User.insert_many({"id": 1, "name": "a", "height": 1.0}, user2)
        """
        from ._query import InsertQuery

        instances = [_as_instance(cls, row) for row in rows]
        return InsertQuery(cls, instances, ttl=ttl, single=False, atomic=atomic)

    @classmethod
    def get(cls, *conditions: Condition, **pk: Any) -> SelectQuery[Self] | FilterResult[Self]:
        """The row with this primary key, or raises ``Model.DoesNotExist``.

        Other keywords (or conditions) are a filter that exactly one live row must match
        (else ``DoesNotExist`` or ``co.MultipleObjectsReturned``).

        Example::

            user = await User.get(id=1)
            sam = await User.get(email="sam@example.com")
        """
        _check_conditions(cls, "get", conditions)
        from ._query import SelectQuery

        key = cls._key_lookup(conditions, pk)
        if key is None:
            return cls.filter(*conditions, **pk).get()
        return SelectQuery(cls, [key], mode="get")

    @classmethod
    def get_by_id(cls, pk: Any) -> SelectQuery[Self]:
        """Like `get`, with the primary key as a value (a tuple or dict when composite).

        Example::

            collection = await Collection.get_by_id((1, 2))
        """
        from ._query import SelectQuery

        return SelectQuery(cls, [cls._schema.normalize_pk(pk)], mode="get")

    @classmethod
    def get_or_none(
        cls, *conditions: Condition, **pk: Any
    ) -> SelectQuery[Self | None] | FilterResult[Self | None]:
        """The row with this primary key, or ``None``.

        Other keywords are a filter: the one matching row, ``None`` if none matches,
        ``co.MultipleObjectsReturned`` if several do.

        Example::

            user = await User.get_or_none(id=404)
        """
        _check_conditions(cls, "get_or_none", conditions)
        from ._filter import FilterResult
        from ._query import SelectQuery

        key = cls._key_lookup(conditions, pk)
        if key is None:
            return FilterResult(cls.filter(*conditions, **pk), "get_or_none")
        return SelectQuery(cls, [key], mode="one")

    @classmethod
    def _key_lookup(cls, conditions: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The primary key when ``kwargs`` name exactly the primary key (a direct read),
        else None (a filter)."""
        if conditions or not kwargs:
            return None
        schema = cls._schema
        if set(kwargs) == {"pk"}:
            return schema.normalize_pk(kwargs["pk"])
        names = set(schema.pk_names) | {schema.attnames[n] for n in schema.pk_names}
        if not set(kwargs) <= names:
            return None
        try:
            return schema.normalize_pk(kwargs)
        except TypeError:
            return None

    @classmethod
    def query(cls, *args: Never, **pk: Any) -> SelectQuery[Self | None]:
        """A query for the row with this primary key; awaits to it or ``None``.

        Example::

            user = await User.query(id=1)
        """
        if args:
            raise _positional_error(cls, "query", args)
        from ._query import SelectQuery

        return SelectQuery(cls, [cls._pk_from_kwargs("query", pk)], mode="one")

    @classmethod
    def query_many(cls, *pks: Any) -> SelectQuery[list[Self | None]]:
        """Rows in argument order (``None`` for a miss), in one multi-get.

        Example::

            users = await User.query_many(1, 2, 3)
        """
        from ._query import SelectQuery

        schema = cls._schema
        return SelectQuery(cls, [schema.normalize_pk(pk) for pk in pks], mode="many")

    @classmethod
    def get_or_create(
        cls,
        defaults: Mapping[str, Any] | None = None,
        *args: Never,
        ttl: Any = NOTHING,
        **pk: Any,
    ) -> GetOrCreateQuery[tuple[Self, bool]]:
        """``(instance, created)``; an add-if-absent write, so two racers agree.

        Example::

            user, created = await User.get_or_create(id=1, defaults={"name": "Sam",
                                                                     "height": 1.7})
        """
        if args or (defaults is not None and not isinstance(defaults, Mapping)):
            given = args if defaults is None or isinstance(defaults, Mapping) else (defaults, *args)
            raise _positional_error(cls, "get_or_create", given)
        from ._query import GetOrCreateQuery

        pk_values = cls._pk_from_kwargs("get_or_create", pk)
        values = dict(zip(cls._schema.pk_names, pk_values, strict=True))
        for key in defaults or {}:
            if key in values:
                raise TypeError(f"{cls.__name__}.get_or_create(): {key!r} is given twice")
        values.update(defaults or {})
        return GetOrCreateQuery(cls, cls(**values), ttl=ttl)

    @classmethod
    def update(cls, *args: Never, ttl: Any = NOTHING, **fields: Any) -> UpdateQuery[Self | None]:
        """Change only the given fields of a stored row, atomically; keeps its TTL unless
        ``ttl=`` is given. Awaits to the updated instance, or ``None`` if there is no row.

        Example::

            user = await User.update(id=1, height=1.8)
            await User.update(id=1, visits=User.visits + 1)  # applied atomically
        """
        if args:
            raise _positional_error(cls, "update", args)
        from ._query import UpdateQuery

        return UpdateQuery(cls, [cls._split_update(fields)], ttl=ttl, mode="one")

    @classmethod
    def update_many(
        cls, *rows: Mapping[str, Any] | Model, ttl: Any = NOTHING
    ) -> UpdateQuery[list[Self | None]]:
        """`update` for many rows (dicts with the pk, or instances: all their fields).

        Example::

            users = await User.update_many({"id": 1, "height": 1.8}, {"id": 2, "name": "K"})
        """
        from ._query import UpdateQuery

        changes = []
        for row in rows:
            if isinstance(row, Model):
                if not isinstance(row, cls):
                    raise TypeError(f"expected {cls.__name__} rows, not {type(row).__name__}")
                changes.append(cls._split_update(row.to_dict()))
            else:
                changes.append(cls._split_update(dict(row)))
        return UpdateQuery(cls, changes, ttl=ttl, mode="many")

    @classmethod
    def set_by_id(
        cls, pk: Any, values: Mapping[str, Any], *, ttl: Any = NOTHING
    ) -> UpdateQuery[Self]:
        """`update` by primary key value; raises ``DoesNotExist`` if there is no row.

        Example::

            user = await User.set_by_id(1, {"height": 1.8})
        """
        from ._query import UpdateQuery

        pk_values = cls._schema.normalize_pk(pk)
        changes = cls._check_changes(dict(values))
        return UpdateQuery(cls, [(pk_values, changes)], ttl=ttl, mode="get")

    @classmethod
    def _split_update(cls, fields: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        schema = cls._schema
        if "pk" in fields:
            fields = _expand_pk(schema, fields, f"{cls.__name__}.update()")
        pk_part = {}
        for n in schema.pk_names:
            for k in (n, schema.attnames[n]):
                if k in fields:
                    pk_part[n] = fields.pop(k)
        if len(pk_part) != len(schema.pk_names):
            raise TypeError(
                f"{cls.__name__}.update() needs the primary key ({', '.join(schema.pk_names)})"
            )
        return schema.normalize_pk(pk_part), cls._check_changes(fields)

    @classmethod
    def _check_changes(cls, changes: dict[str, Any]) -> dict[str, Any]:
        """Validate the new values of an update now, before anything is sent."""
        from ._fields import Expression

        schema = cls._schema
        by_attname = {a: n for n, a in schema.attnames.items()}
        clean: dict[str, Any] = {}
        for key, value in changes.items():
            name = key if key in schema.fields else by_attname.get(key)
            if name is None:
                raise TypeError(f"{cls.__name__} has no field {key!r}")
            if name in schema.pk_names:
                raise TypeError(
                    f"{cls.__name__}.{name} is part of the primary key; it cannot "
                    "be updated (write a new row and delete the old one)"
                )
            if isinstance(value, Expression):
                if value.field is not schema.fields[name]:
                    other = value.field
                    where = getattr(other, "model", None)
                    on = f"{where.__name__}.{other.name}" if where is not None else repr(other)
                    raise TypeError(
                        f"{cls.__name__}.update({key}={value!r}): the expression is on {on}, "
                        f"not on {cls.__name__}.{name}"
                    )
                clean[name] = value
            else:
                probe = cls.__new__(cls)
                setattr(probe, key, value)
                clean[name] = value
        return clean

    @classmethod
    def delete(cls, *args: Never, **pk: Any) -> DeleteQuery[bool]:
        """A query that deletes a row; awaits to ``True`` if it was there.

        Example::

            deleted = await User.delete(id=1)
        """
        if args:
            raise _positional_error(cls, "delete", args)
        from ._query import DeleteQuery

        return DeleteQuery(cls, [cls._pk_from_kwargs("delete", pk)], mode="one")

    @classmethod
    def delete_by_id(cls, pk: Any) -> DeleteQuery[bool]:
        """Delete by primary key value; ``True``, or raises ``DoesNotExist``.

        Example::

            await User.delete_by_id(1)
        """
        from ._query import DeleteQuery

        return DeleteQuery(cls, [cls._schema.normalize_pk(pk)], mode="get")

    @classmethod
    def delete_many(cls, *pks: Any) -> DeleteQuery[int]:
        """Delete many rows in one batch; awaits to the number deleted.

        Example::

            n = await User.delete_many(1, 2, 3)
        """
        from ._query import DeleteQuery

        schema = cls._schema
        return DeleteQuery(cls, [schema.normalize_pk(pk) for pk in pks], mode="many")

    touch = _TouchMethod()
    """``Model.touch(ttl=, **pk)`` / ``obj.touch(ttl=)``: set the row's remaining lifetime
    (``ttl=None``: never expires; without ``ttl=``: the model's ``Meta.ttl``) in one round
    trip, without reading or rewriting the row. Awaits to whether the row exists (a missing
    row is not created).

    Example::

        assert await Session.touch(id=sid, ttl=1800)   # sliding expiry
        await session.touch(ttl=1800)
    """

    @classmethod
    def remaining_ttl(cls, *args: Never, **pk: Any) -> RemainingTTLQuery[float | None]:
        """Seconds left before the row expires (a float), ``None`` for a row that never
        expires; raises ``Model.DoesNotExist`` for a missing row. One round trip.

        Example::

            left = await Session.remaining_ttl(id=sid)
        """
        from ._query import RemainingTTLQuery

        if args:
            raise _positional_error(cls, "remaining_ttl", args)
        return RemainingTTLQuery(cls, cls._pk_from_kwargs("remaining_ttl", pk))

    # -- instance queries -------------------------------------------------------------------

    def save(self, force_insert: bool = False, *, ttl: Any = NOTHING) -> Query[Self]:
        """Write this instance. Without ``force_insert`` the row must exist (else
        ``DoesNotExist``); with it, the row is written whether or not it exists.

        Example::

            user.height = 1.9
            await user.save()
        """
        from ._auto import auto_field
        from ._query import InsertQuery

        self._check_not_sparse("save")
        auto = auto_field(self._schema)
        if auto is not None and self.__dict__.get(auto.name) is None:
            force_insert = True  # a new row: its id comes from the counter
        return InsertQuery(type(self), [self], ttl=ttl, single=True, replace=not force_insert)

    def delete_instance(self) -> DeleteQuery[bool]:
        """Delete this instance's row; awaits to ``True`` if it was there.

        Example::

            await user.delete_instance()
        """
        from ._query import DeleteQuery

        cls = type(self)
        return DeleteQuery(cls, [cls._schema.pk_values(self)], mode="one", instances=[self])

    def refresh(self) -> Query[Self]:
        """Reload every field from the backend, in place; ``DoesNotExist`` if it is gone.

        Example::

            await user.refresh()
        """
        from ._query import LoadQuery

        return LoadQuery(self)

    def load(self) -> Query[Self]:
        """Fill a sparse instance (an unloaded foreign key) in place; awaits to itself.

        Example::

            author = await article.author.load()
        """
        from ._query import LoadQuery

        return LoadQuery(self)

    # -- queries by field ---------------------------------------------------------------

    @classmethod
    def filter(cls, *conditions: Condition, **lookups: Any) -> FilterQuery[Self]:
        """A query for the rows matching every lookup (``age__gte=18``, ``name="Sam"``,
        ``team__name="red"``, ``User.age > 3``); awaits to a list.

        Example::

            adults = await User.filter(age__gte=18).order_by("name")
        """
        from ._filter import FilterQuery

        return FilterQuery(cls).filter(*conditions, **lookups)

    @classmethod
    def exclude(cls, *conditions: Condition, **lookups: Any) -> FilterQuery[Self]:
        """A query for the rows that do not match all of these lookups.

        Example::

            humans = await User.exclude(name__endswith="bot")
        """
        from ._filter import FilterQuery

        return FilterQuery(cls).exclude(*conditions, **lookups)

    @classmethod
    def all(cls) -> FilterQuery[Self]:
        """A query for every live row.

        Example::

            users = await User.all()
        """
        from ._filter import FilterQuery

        return FilterQuery(cls)

    @classmethod
    def count(cls, *conditions: Condition, **lookups: Any) -> FilterResult[int]:
        """A query for the number of live rows matching these lookups.

        Example::

            n = await User.count(age__gte=18)
        """
        return cls.filter(*conditions, **lookups).count()

    @classmethod
    def first(cls, *conditions: Condition, **lookups: Any) -> FilterResult[Self | None]:
        """A query for the first matching row by primary key, or ``None``.

        Example::

            coat = await Product.first(name="Coat")
        """
        return cls.filter(*conditions, **lookups).first()

    @classmethod
    def order_by(cls, *names: str) -> FilterQuery[Self]:
        """A query for every row, in this order.

        Example::

            tallest = await User.order_by("-height").limit(3)
        """
        return cls.all().order_by(*names)

    @classmethod
    def limit(cls, n: int) -> FilterQuery[Self]:
        """A query for at most ``n`` rows (by primary key).

        Example::

            some = await User.limit(10)
        """
        return cls.all().limit(n)

    @classmethod
    def offset(cls, n: int) -> FilterQuery[Self]:
        """A query for the rows after the first ``n`` (by primary key).

        Example::

            rest = await User.offset(10)
        """
        return cls.all().offset(n)

    @classmethod
    def update_or_create(
        cls, defaults: Mapping[str, Any] | None = None, *, ttl: Any = NOTHING, **lookups: Any
    ) -> UpdateOrCreateQuery[tuple[Self, bool]]:
        """``(instance, created)``: the one row matching ``lookups`` updated with
        ``defaults`` (atomically), or a new row made of the lookups' values and
        ``defaults``.

        Example::

            user, created = await User.update_or_create(
                email="sam@example.com", defaults={"name": "Sam"}
            )
        """
        from ._filter import UpdateOrCreateQuery

        defaults = dict(defaults or {})
        query = cls.filter(**lookups)
        changes = cls._check_changes(dict(defaults)) if defaults else {}
        schema = cls._schema
        by_attname = {a: n for n, a in schema.attnames.items()}
        values: dict[str, Any] = {}
        for key, value in lookups.items():
            if "__" in key and not key.endswith("__exact"):
                continue
            name = key.removesuffix("__exact")
            if name == "pk":
                pk = schema.normalize_pk(value)
                values.update(zip(schema.pk_names, pk, strict=True))
            elif name in schema.fields or name in by_attname:
                values[name] = value
        for key in defaults:
            if key in values:
                raise TypeError(f"{cls.__name__}.update_or_create(): {key!r} is given twice")
        values.update(defaults)
        return UpdateOrCreateQuery(cls, query, changes, values, ttl)

    def _check_not_sparse(self, what: str) -> None:
        if self.__dict__.get("_sparse_"):
            raise TypeError(
                f"cannot {what} a sparse {type(self).__name__} (only its primary key "
                "is known); load() it first"
            )

    @classmethod
    def _sparse(cls, pk: tuple[Any, ...], state: str = "sparse") -> Self:
        schema = cls._schema
        obj = cls.__new__(cls)
        d = obj.__dict__
        for n, v in zip(schema.pk_names, pk, strict=True):
            d[schema.attnames[n]] = v
        d["_sparse_"] = state
        return obj


setattr(Model, "_schema", _AbstractSchema())  # noqa: B010 - the base class is abstract


def _expand_pk(schema: Schema, kwargs: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``pk=value`` → the primary key's field names (a tuple or dict for a composite key)."""
    out = dict(kwargs)
    value = out.pop("pk")
    for n in schema.pk_names:
        if n in out or schema.attnames[n] in out:
            raise TypeError(f"{where}: the primary key is given twice (pk= and {n}=)")
    if schema.composite:
        if isinstance(value, Mapping):
            value = tuple(
                value[n] if n in value else value[schema.attnames[n]] for n in schema.pk_names
            )
        if not isinstance(value, tuple | list) or len(value) != len(schema.pk_names):
            raise TypeError(
                f"{where}: pk= of {schema.model_name} is a tuple of "
                f"({', '.join(schema.pk_names)}), not {value!r}"
            )
        out.update(zip(schema.pk_names, value, strict=True))
    else:
        out[schema.pk_names[0]] = value
    return out


def _as_instance(cls: type[Model], row: Mapping[str, Any] | Model) -> Model:
    if isinstance(row, Model):
        if type(row)._schema is not cls._schema:
            raise TypeError(f"expected {cls.__name__} rows, not {type(row).__name__}")
        row._check_not_sparse("insert")
        return row
    if isinstance(row, Mapping):
        return cls(**row)
    raise TypeError(f"a row is a dict or a {cls.__name__}, not {type(row).__name__}")
