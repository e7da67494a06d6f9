"""Keys: the only place they are made, escaped and taken apart.

A row's key is ``[namespace:]name:pk`` (or ``[namespace:]<key_format>`` with a custom key
format), where each part is escaped so that the separator inside a part never splits it:
two different primary keys (or namespaces, or model names) can never produce the same key.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._fields import Field

KEY_SEPARATOR = ":"
#: The last part of a model's id counter key (see `counter_key`).
COUNTER_SUFFIX = "__autoincrement__"


def escape_key_part(text: str) -> str:
    """Escape the separator (and the escape character) inside one part of a key, so two
    different primary keys can never produce the same key."""
    if "\\" in text:
        text = text.replace("\\", "\\\\")
    if KEY_SEPARATOR in text:
        text = text.replace(KEY_SEPARATOR, "\\" + KEY_SEPARATOR)
    return text


def separator_positions(key: str) -> list[int]:
    """Positions of the unescaped separators in ``key`` (see `escape_key_part`)."""
    cuts = []
    escaped = False
    for i, char in enumerate(key):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == KEY_SEPARATOR:
            cuts.append(i)
    return cuts


def count_separators(text: str) -> int:
    """The number of unescaped key separators in ``text``."""
    return len(separator_positions(text))


def namespace_prefix(namespace: str) -> str:
    """The prefix a backend's ``namespace`` puts before every key (empty for none).

    The namespace is escaped as a key part: namespace "app" with key "sessions:1" and
    namespace "app:sessions" with key "1" are two keys, and clear() of "app" never reaches
    "app:sessions".
    """
    return f"{escape_key_part(namespace)}{KEY_SEPARATOR}" if namespace else ""


def model_prefix(namespace: str, name: str, key_format: object) -> str:
    """The prefix of every key of a model: its escaped namespace, then its escaped name
    unless the model has its own ``key_format`` (so that no other namespace and name, and
    no composite key, can produce the same prefix)."""
    return namespace_prefix(namespace) + (
        f"{escape_key_part(name)}{KEY_SEPARATOR}" if key_format is None else ""
    )


def row_key(
    prefix: str,
    pk_fields: Sequence[Field[Any]],
    pk: tuple[Any, ...],
    key_format: str | Callable[..., str] | None,
) -> str:
    """The key of the row whose primary key values are ``pk``."""
    if key_format is None:
        if len(pk) == 1:
            return prefix + pk_fields[0].key_part(pk[0])
        return prefix + KEY_SEPARATOR.join(
            f.key_part(v) for f, v in zip(pk_fields, pk, strict=True)
        )
    if callable(key_format):
        return prefix + str(key_format(*pk))
    return prefix + key_format % pk


def pk_text(pk_fields: Sequence[Field[Any]], pk: tuple[Any, ...]) -> str:
    """The text of a whole primary key inside another model's key (foreign keys)."""
    return KEY_SEPARATOR.join(
        escape_key_part(f.key_part(v)) for f, v in zip(pk_fields, pk, strict=True)
    )


def counter_key(namespace: str, name: str) -> str:
    """The key of a model's id counter: never a key of one of its rows (an AutoField key
    part is an integer)."""
    ns = f"{namespace}{KEY_SEPARATOR}" if namespace else ""
    return f"{ns}{name}{KEY_SEPARATOR}{COUNTER_SUFFIX}"


# -- index buckets (secondary indexes) ----------------------------------------------------------


def hash_tag(name: str) -> str:
    """The hash-tag text of a model's index buckets: its name without braces."""
    return name.replace("{", "").replace("}", "")


def index_base(namespace: str, name: str) -> str:
    """The text every index bucket name of a model derives from."""
    return f"{namespace}{KEY_SEPARATOR}{name}" if namespace else name


#: Hash slots of Redis Cluster.
_SLOTS = 16384


@functools.cache
def bucket_tags(tag: str, buckets: int) -> tuple[str, ...]:
    """The hash-tag texts of a model's index buckets, by bucket number: ``<tag>.0`` when
    there is one; with several, bucket ``b`` is ``<tag>.<k>`` for the first ``k`` whose hash
    slot lies in the ``b``-th of ``buckets`` equal ranges of the slots, so that the buckets
    spread over a Cluster's nodes as evenly as its slots do (a Cluster splits its slots
    into contiguous ranges, one per node: 16 buckets on 3 nodes are 5, 5 and 6, where tags
    taken at random put 8 on one node). Deterministic: the same for every client."""
    if buckets <= 1:
        return (f"{tag}.0",)
    from redis.crc import key_slot  # only a Redis Cluster has several buckets

    found: dict[int, str] = {}
    k = 0
    while len(found) < buckets:
        text = f"{tag}.{k}"
        b = key_slot(text.encode("utf-8", "surrogatepass")) * buckets // _SLOTS
        found.setdefault(b, text)
        k += 1
    return tuple(found[b] for b in range(buckets))


def bucket_name(base: str, tag_text: str) -> str:
    """The name every key of the index bucket of hash-tag text ``tag_text`` derives from
    (its hash tag included; see `bucket_tags`)."""
    return f"~ix{KEY_SEPARATOR}{base}{KEY_SEPARATOR}{{{tag_text}}}"


def tag_key(key: str, tag_text: str) -> str:
    """A row key with its bucket's hash tag at the end (Redis Cluster, several buckets)."""
    return f"{key}{{{tag_text}}}"


def untag_key(key: str, tag: str) -> str:
    """A row key without its bucket tag (``key`` itself when it has none)."""
    if key.endswith("}"):
        start = key.rfind("{")
        if start >= 0 and key[start + 1 :].startswith(tag + "."):
            return key[:start]
    return key


def tag_of(key: str, plain: str) -> str:
    """The hash-tag text of ``key``, whose untagged form is ``plain``."""
    return key[len(plain) + 1 : -1]
