"""The acacheorm exception hierarchy.

```
CacheORMError
├── DoesNotExist                 (and one subclass per model: ``User.DoesNotExist``)
├── MultipleObjectsReturned      (``get`` by a filter matched more than one row)
├── IntegrityError               (a unique value taken, a RESTRICT delete refused)
├── ValidationError              (a value does not fit its field)
├── SerializationError           (a payload could not be encoded or decoded)
├── ConfigurationError           (a bad model Meta, a missing driver; raised at definition)
└── BackendError                 (anything the store or its driver reported)
    ├── BackendUnavailable       (server down, refused, timed out)
    ├── ConflictError            (an atomic update gave up after its retries)
    ├── KeyTooLongError / ValueTooLargeError  (the store cannot hold it)
    └── AtomicityError           (an all-or-nothing batch cannot be run atomically here)
```

Driver exceptions (redis-py, socket and OS errors) never leak: backends map them with
``map_errors`` and re-raise ``from`` the original.
"""

from __future__ import annotations

from typing import Any


class CacheORMError(Exception):
    """Base class of every error acacheorm raises.

    Example::

        try:
            await User.get(id=1)
        except co.CacheORMError as exc:
            log.warning("cache lookup failed: %s", exc)
    """


class DoesNotExist(CacheORMError):
    """The requested row is not stored. Each model has its own subclass.

    Example::

        try:
            user = await User.get(id=1)
        except User.DoesNotExist:
            user = None

    ``key`` is the stored key when acacheorm raised it, and ``detail`` the message without
    it (what the FastAPI handlers answer: the key is internal).
    """

    def __init__(self, *args: Any, key: str | None = None, detail: str | None = None) -> None:
        super().__init__(*args)
        self.key = key
        self.detail = detail if detail is not None else (str(args[0]) if args else "")


class MultipleObjectsReturned(CacheORMError):
    """``get`` with a filter matched more than one live row.

    Example::

        try:
            user = await User.get(name="Sam")
        except co.MultipleObjectsReturned:
            user = await User.filter(name="Sam").order_by("id").first()
    """


class IntegrityError(CacheORMError):
    """A write refused to keep the data consistent: a ``unique=True`` value another live row
    holds (nothing written), or a delete of a row that ``on_delete=co.RESTRICT`` rows point
    at (nothing deleted).

    Example::

        try:
            await User.create(id=2, email="taken@example.com")
        except co.IntegrityError:
            ...
    """


class ValidationError(CacheORMError, ValueError):
    """A value does not fit its field. Names the model, field and offending value.

    Example::

        with pytest.raises(co.ValidationError):
            User(id="one", name="Sam", height=1.8)
    """

    def __init__(
        self,
        message: str,
        *,
        model: str | None = None,
        field: str | None = None,
        value: Any = None,
    ) -> None:
        self.model = model
        self.field = field
        self.value = value
        prefix = ""
        if model and field:
            prefix = f"{model}.{field}: "
        elif model:
            prefix = f"{model}: "
        elif field:
            prefix = f"{field}: "
        super().__init__(prefix + message)


class SerializationError(CacheORMError):
    """A payload could not be encoded or decoded; names the key and the model when known.

    Example::

        try:
            await User.get(id=1)
        except co.SerializationError as exc:
            print(exc.key, exc.model)
    """

    def __init__(self, message: str, *, key: str | None = None, model: str | None = None) -> None:
        self.key = key
        self.model = model
        self.reason = message
        parts = [message]
        if model is not None:
            parts.append(f"model={model}")
        if key is not None:
            parts.append(f"key={key!r}")
        super().__init__(parts[0] if len(parts) == 1 else f"{parts[0]} ({', '.join(parts[1:])})")


class ConfigurationError(CacheORMError, TypeError):
    """A model or backend is configured wrongly (bad Meta option, missing driver extra).

    Example::

        with pytest.raises(co.ConfigurationError):
            class Bad(co.Model):
                class Meta:
                    colour = "red"
    """


class BackendError(CacheORMError):
    """The store or its driver reported an error.

    Example::

        try:
            await backend.incr("not-a-number")
        except co.BackendError:
            ...
    """


class BackendUnavailable(BackendError):
    """The server is down, refused the connection, or did not answer within the timeout.

    Example::

        try:
            await User.get(id=1)
        except co.BackendUnavailable:
            return fallback()
    """


class ConflictError(BackendError):
    """An atomic update gave up after its retries because the row kept changing.

    Example::

        try:
            await User.update(id=1, height=1.9)
        except co.ConflictError:
            ...  # retry later
    """


class KeyTooLongError(BackendError, ValueError):
    """A key cannot be stored by this backend, even after mapping.

    Example::

        with pytest.raises(co.KeyTooLongError):
            await backend.set("x" * 10**7, b"v")
    """


class ValueTooLargeError(BackendError, ValueError):
    """A value exceeds the backend's item size limit.

    Example::

        with pytest.raises(co.ValueTooLargeError):
            await memcached.set("k", b"x" * (2 * 1024 * 1024))
    """


class AtomicityError(BackendError):
    """An all-or-nothing batch was requested that this backend cannot run atomically.

    Example::

        with pytest.raises(co.AtomicityError):
            await User.insert_many(*rows, atomic=True)  # keys on several cluster slots
    """


class KeyClashWarning(UserWarning):
    """Two live models of different modules store their rows under the same keys on one
    backend (same namespace and name), so each would read and overwrite the other's rows.
    Warned when the second model is defined; give one of them another ``Meta.name`` or
    ``Meta.namespace``. A model redefined in its own module (a re-run notebook cell) is not
    a clash.

    Example::

        import warnings

        warnings.simplefilter("error", co.KeyClashWarning)  # make it fail loudly
    """
