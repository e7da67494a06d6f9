"""HTML tables for notebooks (``_repr_html_``)."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._base import Model


class InstanceList(list[Any]):
    """The list a multi-row query returns: a plain list, shown as a table in notebooks."""

    __slots__ = ()

    def _repr_html_(self) -> str:
        return instances_html(self)


def instances_html(instances: Sequence[Model | None]) -> str:
    """An HTML table of instances (one row each; ``None`` rows shown as missing)."""
    models = {type(i) for i in instances if i is not None}
    if len(models) != 1:
        rows = "".join(f"<tr><td>{html.escape(repr(i))}</td></tr>" for i in instances)
        return f"<table>{rows}</table>"
    model = models.pop()
    names = list(model._schema.fields)
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    body = []
    for obj in instances:
        if obj is None:
            body.append(f'<tr><td colspan="{len(names)}"><em>None</em></td></tr>')
            continue
        data: dict[str, Any] = obj.to_dict()
        cells = "".join(
            f"<td>{html.escape(repr(data[n])) if n in data else '<em>not loaded</em>'}</td>"
            for n in names
        )
        body.append(f"<tr>{cells}</tr>")
    return (
        f"<table><caption>{html.escape(model.__name__)}</caption><thead><tr>{head}</tr>"
        f"</thead><tbody>{''.join(body)}</tbody></table>"
    )
