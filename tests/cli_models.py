"""Models for the CLI tests: what ``migrate tests.cli_models:Person`` rewrites rows into.

`Person` is the current definition (msgpack, with ``nickname`` added); `old_person_model`
builds the definition the rows were first written with (json by default, no ``nickname``).
Both store under ``person:<id>``. The CLI never uses a model's Meta backend: it reads and
writes the URL it is given.
"""

from __future__ import annotations

from typing import Any

import acacheorm as co


class Person(co.Model):
    id = co.IntegerField(primary_key=True)
    name = co.StringField()
    height = co.FloatField()
    nickname = co.StringField(default="")

    class Meta:
        backend = co.SimpleBackend()
        serializer = "msgpack"
        read_serializers = ("json",)  # what OldPerson wrote: migrate reads those rows
        name = "person"


class Keyed(co.Model):
    id = co.IntegerField(primary_key=True)

    class Meta:
        backend = co.SimpleBackend()
        serializer = "msgpack"
        key_format = "keyed.%d"


class Computed(co.Model):
    id = co.IntegerField(primary_key=True)

    class Meta:
        backend = co.SimpleBackend()
        serializer = "msgpack"
        key_format = staticmethod(lambda pk: f"c{pk}")


def old_person_model(store: co.Backend, fmt: str = "json") -> Any:
    """The earlier definition of `Person` (no ``nickname``), bound to ``store``."""

    class OldPerson(co.Model):
        id = co.IntegerField(primary_key=True)
        name = co.StringField()
        height = co.FloatField()

        class Meta:
            backend = store
            serializer = fmt
            name = "person"

    return OldPerson
