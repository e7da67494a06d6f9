"""The ``python -m acacheorm`` command line: click commands rendering with rich.

Needs the ``cli`` extra (``pip install 'acacheorm[cli]'``). The work itself is in ``_ops``;
``python -m acacheorm`` and the ``acacheorm`` script run `cli` (see ``acacheorm.__main__``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from .._exceptions import CacheORMError
from .._urls import backend_from_url, redact
from ..backends.base import Backend
from . import _ops

T = TypeVar("T")

URL_HELP = (
    "URL is a backend URL: memory://, file:///path, redis://host:6379/0, "
    "redis+cluster://host:7000, memcached://h1:11211,h2:11211; add ?namespace=NS to work "
    "inside a namespace."
)
_VALUE_WIDTH = 200


def _console() -> Console:
    # Built per command, so that output goes wherever sys.stdout points at that moment.
    return Console(highlight=False, soft_wrap=False)


def _backend(url: str) -> Backend:
    try:
        return backend_from_url(url)
    except (ValueError, TypeError, CacheORMError) as exc:
        raise click.BadParameter(str(exc), param_hint="URL") from exc


class _RateColumn(ProgressColumn):
    """Keys per second."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.0f} keys/s")


async def _count_keys(bar: Any, backend: Backend, prefix: str, batch_size: int) -> int:
    """Count the keys under ``prefix`` with a "listing keys" line on ``bar`` (rate, count)."""
    listing = bar.add_task("listing keys", total=None)
    total = await _ops.count_keys(backend, prefix, batch_size, lambda n: bar.advance(listing, n))
    bar.update(listing, total=total, completed=total)
    return total


def _progress(console: Console) -> Progress:
    """Count, rate, elapsed time and (when the total is known) a bar and the time left."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
    )


def _describe_ttl(left: float | None) -> str:
    if left is None:
        return "never expires"
    return f"{left:.3f} s" if left < 60 else f"{left:,.0f} s ({_ops.human_seconds(round(left))})"


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; expected failures become a one-line error, exit code 1."""
    try:
        return asyncio.run(coro)
    except _ops.OperationError as exc:
        raise click.ClickException(str(exc)) from exc
    except NotImplementedError as exc:
        raise click.ClickException(str(exc)) from exc
    except CacheORMError as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc


def _imports(modules: tuple[str, ...]) -> None:
    for name in modules:
        try:
            _ops.import_module(name)
        except _ops.OperationError as exc:
            raise click.BadParameter(str(exc), param_hint="--import") from exc


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _VALUE_WIDTH else text[: _VALUE_WIDTH - 1] + "…"


_import_option = click.option(
    "--import",
    "imports",
    multiple=True,
    metavar="MODULE",
    help="Import MODULE first, for the serializers or models it registers (repeatable).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="acacheorm", prog_name="acacheorm")
def cli() -> None:
    """acacheorm command-line tools: a demo, and operations on stored rows."""


@cli.command()
@click.option(
    "--url",
    default="memory://",
    show_default=True,
    help="Backend URL (memory://, file:///path, redis://…, redis+cluster://…, "
    "memcached://h:p,h:p).",
)
@click.option(
    "--serializer",
    type=click.Choice(["json", "msgpack", "pickle"]),
    default="msgpack",
    show_default=True,
    help="The models' serializer (pickle needs ACACHEORM_PICKLE_KEY).",
)
@click.option(
    "--keep",
    is_flag=True,
    help="Leave the demo's rows in the store (namespace acacheorm-demo), to look at with "
    "inspect and stats.",
)
@click.pass_context
def demo(ctx: click.Context, url: str, serializer: str, keep: bool) -> None:
    """Walk through models, queries and a lazy foreign key."""
    from ._demo import DEMO_NAMESPACE, run_demo

    try:
        backend = backend_from_url(url, namespace=DEMO_NAMESPACE)
    except (ValueError, TypeError, CacheORMError) as exc:
        raise click.BadParameter(str(exc), param_hint="--url") from exc
    ctx.exit(_run(run_demo(backend, serializer, keep=keep, url=url)))


@cli.command("inspect", epilog=URL_HELP, short_help="Decode one stored row.")
@click.argument("url")
@click.argument("key")
@click.option(
    "--model",
    "model_spec",
    metavar="MODULE:Model",
    help="Also decode the row through this model: Python values, and whether it was "
    "written with the model's current serializer and schema.",
)
@_import_option
@click.pass_context
def inspect_command(
    ctx: click.Context, url: str, key: str, model_spec: str | None, imports: tuple[str, ...]
) -> None:
    """Decode the value stored under KEY: its envelope (serializer, schema fingerprint) and
    its fields.

    KEY is the key as stored under the URL's namespace, e.g. ``user:1``.
    """
    _imports(imports)
    model = _load_model(model_spec) if model_spec else None
    backend = _backend(url)

    async def go() -> tuple[_ops.Inspection, Any]:
        async with backend:
            found = await _ops.inspect_key(backend, key, model)
        row = None if model is None else model._schema.decode(key, found.raw)
        return found, row

    found, row = _run(go())
    console = _console()
    envelope = Table(title=f"{key} in {redact(url)}", show_header=False, title_justify="left")
    envelope.add_column("", style="bold")
    envelope.add_column("")
    envelope.add_row("stored bytes", str(found.size))
    form = "array of values" if found.version == 2 else "map of fields"
    envelope.add_row("envelope", f"magic 0xAC, version {found.version} ({form})")
    envelope.add_row("serializer", _ops.describe_tag(found.tag))
    envelope.add_row("schema fingerprint", f"{found.fingerprint:#06x}")
    envelope.add_row("time to live", _describe_ttl(found.remaining_ttl))
    if model is not None:
        schema = model._schema
        differs = [
            what
            for what, same in (
                ("serializer", found.tag == schema.serializer.tag),
                ("schema", found.fingerprint == schema.fingerprint),
            )
            if not same
        ]
        if not differs and not found.raw.startswith(schema.row_header):
            differs.append("body form")  # a map row of a model that now writes arrays
        state = (
            f"written with another {' and '.join(differs)}: migrate rewrites it"
            if differs
            else "current"
        )
        envelope.add_row(
            "model",
            f"{model.__name__} writes {_ops.describe_tag(schema.serializer.tag)}, schema "
            f"{schema.fingerprint:#06x}; this row is {state}",
        )
    console.print(envelope)
    title = (
        f"fields ({found.serializer.name})"
        if model is None
        else f"fields as {model.__name__} reads them"
    )
    fields = Table(title=title, title_justify="left")
    fields.add_column("field", style="bold")
    fields.add_column("value", overflow="fold")
    fields.add_column("type")
    if row is not None:
        for name in model._schema.fields:  # type: ignore[union-attr]
            value = row.__dict__.get(model._schema.attnames[name])  # type: ignore[union-attr]
            fields.add_row(name, _short(value), type(value).__name__)
    else:
        for name, value in found.fields.items():
            fields.add_row(str(name), _short(value), type(value).__name__)
    console.print(fields)
    ctx.exit(0)


def _load_model(spec: str) -> Any:
    try:
        return _ops.import_model(spec)
    except _ops.OperationError as exc:
        raise click.BadParameter(str(exc), param_hint="MODULE:Model") from exc


@cli.command(epilog=URL_HELP, short_help="Keys and bytes per key prefix.")
@click.argument("url")
@click.option("--prefix", default="", help="Only keys starting with this (inside the namespace).")
@click.option(
    "--depth",
    type=click.IntRange(min=1),
    default=None,
    help="Group keys by their first N ':'-separated parts (default: up to the last ':').",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=500,
    show_default=True,
    help="Keys read per round trip.",
)
@_import_option
@click.pass_context
def stats(
    ctx: click.Context,
    url: str,
    prefix: str,
    depth: int | None,
    batch_size: int,
    imports: tuple[str, ...],
) -> None:
    """Keys and bytes per key prefix (model namespace and name), and which serializers
    wrote them.

    Lists every key of the store (or of the URL's namespace) twice, once to count them and
    once to read them (a batch at a time, never all in memory), so run it against a replica
    or at a quiet time on a large store.
    """
    _imports(imports)
    backend = _backend(url)

    console = _console()

    async def go() -> list[_ops.GroupStats]:
        async with backend:
            with _progress(console) as bar:
                total = await _count_keys(bar, backend, prefix, batch_size)
                task = bar.add_task("reading", total=total)
                return await _ops.collect_stats(
                    backend,
                    prefix,
                    depth=depth,
                    batch_size=batch_size,
                    progress=lambda n: bar.advance(task, n),
                )

    groups = _run(go())
    if not groups:
        console.print(f"no keys under {prefix!r} in {redact(url)}")
        ctx.exit(0)
    table = Table(title=f"keys in {redact(url)}", title_justify="left", show_footer=True)
    total_keys = sum(g.keys for g in groups)
    total_bytes = sum(g.bytes for g in groups)
    table.add_column("prefix", "total", style="bold")
    table.add_column("keys", str(total_keys), justify="right")
    table.add_column("bytes", str(total_bytes), justify="right")
    table.add_column("avg bytes", str(total_bytes // total_keys), justify="right")
    table.add_column("serializers")
    for g in groups:
        formats = ", ".join(f"{name} {n}" for name, n in sorted(g.formats.items()))
        table.add_row(
            g.prefix or "(no ':')", str(g.keys), str(g.bytes), str(g.bytes // g.keys), formats
        )
    console.print(table)
    ctx.exit(0)


@cli.command(epilog=URL_HELP, short_help="Rewrite a model's rows to its current format.")
@click.argument("url")
@click.argument("model_spec", metavar="MODULE:Model")
@click.option("--dry-run", is_flag=True, help="Read and decode every row; write nothing.")
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=500,
    show_default=True,
    help="Rows read and rewritten per round trip.",
)
@click.option(
    "--prefix",
    default=None,
    help="The model's key prefix, when it cannot be derived (a callable Meta.key_format).",
)
@click.pass_context
def migrate(
    ctx: click.Context,
    url: str,
    model_spec: str,
    dry_run: bool,
    batch_size: int,
    prefix: str | None,
) -> None:
    """Rewrite every stored row of a model with its current serializer and schema.

    MODULE:Model names the model (e.g. myapp.models:User); its module is imported, so the
    serializers it registers are known. Rows are read from and written to URL (the model's
    own Meta.backend is not used). Each row keeps its remaining TTL, and a row changed by
    someone else while the migration runs is skipped, never overwritten: run it again to
    pick those up.
    """
    model = _load_model(model_spec)
    schema = model._schema
    try:
        key_prefix = prefix if prefix is not None else _ops.model_key_prefix(model)
    except _ops.OperationError as exc:
        raise click.UsageError(str(exc)) from exc
    backend = _backend(url)
    console = _console()
    console.print(
        f"{model.__name__}: keys {key_prefix!r}… in {redact(url)} → "
        f"{_ops.describe_tag(schema.serializer.tag)}, schema {schema.fingerprint:#06x}"
        + (" (dry run: nothing is written)" if dry_run else "")
    )

    async def go() -> _ops.MigrationReport:
        async with backend:
            with _progress(console) as bar:
                # Count first (so the rewrite can show the time left), then stream: no list
                # of every key is ever held.
                total = await _count_keys(bar, backend, key_prefix, batch_size)
                task = bar.add_task("checking" if dry_run else "migrating", total=total)
                return await _ops.migrate(
                    backend,
                    model,
                    backend.scan(key_prefix, batch_size),
                    batch_size=batch_size,
                    dry_run=dry_run,
                    progress=lambda n: bar.advance(task, n),
                )

    report = _run(go())
    table = Table(show_header=False, title="migration report", title_justify="left")
    table.add_column("", style="bold")
    table.add_column("", justify="right")
    table.add_row("rows found", str(report.scanned))
    table.add_row("would be rewritten" if dry_run else "rewritten", str(report.migrated))
    table.add_row("already current", str(report.current))
    if not dry_run:
        table.add_row("changed meanwhile (skipped)", str(report.changed))
    table.add_row("deleted meanwhile", str(report.vanished))
    table.add_row("failed", str(len(report.failed)))
    console.print(table)
    for key, reason in report.failed[:20]:
        console.print(f"failed {key!r}: {reason}", style="red", markup=False)
    if len(report.failed) > 20:
        console.print(f"… and {len(report.failed) - 20} more")
    if report.changed:
        console.print("rows changed meanwhile were left as they are: run migrate again")
    ctx.exit(1 if report.failed else 0)
