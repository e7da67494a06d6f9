"""Declaring models: `ModelMeta` turns a class body (fields, annotations, ``Meta``) into a
frozen `Schema`; `CompositeKey`; the checks of a declaration; argument helpers of `Model`."""

from __future__ import annotations

import uuid
import warnings
import weakref
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, dataclass_transform

from ._base import Model
from ._exceptions import ConfigurationError, DoesNotExist, KeyClashWarning
from ._fields import Field
from ._fields_scalar import EnumField, UUIDField
from ._hints import (
    _NO_DEFAULT,
    _NOT_A_FIELD,
    _AnnotationResolver,
    _check_annotation,
    _field_for,
)
from ._index import setup_indexes
from ._relations import install_pending_reverse
from ._schema import NamedSchema, Schema, register_model, schema_of
from .backends.base import Backend, normalize_ttl
from .serializers import Serializer, registry

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
            schema = schema_of(base)
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
            schema = schema_of(base)
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
        register_model(cls)
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
