"""`pressroom cancel ID...`: stop requests (a burst: its children not yet delivered)."""

from __future__ import annotations

from typing import Any

import typer

from services.console.cancel import cancel_requests
from services.console.cli._audit import audited, requester
from services.console.cli._common import emit_json, fail, on_bus, out, settings
from services.console.cli._output import literal
from shared.errors import PressroomError

# Exit 1 when any of them was not stopped: finished already, or a delivery under way.
NOT_STOPPED = frozenset({"too_late", "delivered", "finished"})


@audited("cancel")
def cancel(
    request_ids: list[str] = typer.Argument(..., help="Request ids to cancel."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Cancel requests: no stage starts them, a render in progress is stopped, nothing is
    delivered after this returns (a delivery already under way is named). Exit 1 when one
    was not stopped: finished already, or a delivery under way."""
    who = requester()

    async def act(bus: Any) -> Any:
        return await cancel_requests(bus, request_ids, who)

    try:
        results = on_bus(settings(), act)
    except PressroomError as error:
        fail(error.reason)
    if as_json:
        emit_json([r.__dict__ for r in results])
    else:
        for result in results:
            out.print(f"{literal(result.request_id)}: {literal(result.message)}", soft_wrap=True)
    if any(r.outcome in NOT_STOPPED for r in results):
        raise SystemExit(1)


def register(app: typer.Typer) -> None:
    app.command("cancel")(cancel)
