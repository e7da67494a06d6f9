"""A serializer whose library is not installed is reported when the model is defined,
naming the extra to install (docs/errors.md). The missing library is simulated in a fresh
interpreter (``sys.modules[name] = None`` makes its import fail)."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60
    )


def test_missing_msgpack_is_a_configuration_error_at_class_definition() -> None:
    result = run(
        """
        import sys
        sys.modules["msgpack"] = None
        import acacheorm as co

        try:
            class User(co.Model):
                id = co.IntegerField(primary_key=True)

                class Meta:
                    backend = co.SimpleBackend()
                    serializer = "msgpack"
        except co.ConfigurationError as exc:
            print("refused:", exc)
        else:
            print("defined")

        class Other(co.Model):  # another serializer still works
            id = co.IntegerField(primary_key=True)

            class Meta:
                backend = co.SimpleBackend()
                serializer = "json"
        print("json ok")
        """
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == (
        "refused: User.Meta.serializer 'msgpack': msgpack is not installed: "
        "pip install 'acacheorm[msgpack]'"
    )
    assert lines[1] == "json ok"


def test_missing_protobuf_is_a_configuration_error_naming_the_extra() -> None:
    result = run(
        """
        import sys
        sys.modules["google.protobuf"] = None
        import acacheorm as co

        try:
            co.ProtobufSerializer(object)
        except co.ConfigurationError as exc:
            print("refused:", exc)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "refused: protobuf is not installed: pip install 'acacheorm[protobuf]'"
    )


def test_with_msgpack_installed_the_model_is_defined() -> None:
    result = run(
        """
        import acacheorm as co

        class User(co.Model):
            id = co.IntegerField(primary_key=True)

            class Meta:
                backend = co.SimpleBackend()
                serializer = "msgpack"
        print(User._schema.serializer.name)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "msgpack"
