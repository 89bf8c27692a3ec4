"""Bursting: one request, one child report per item of a list in the fetched data.

The fetcher gathers the data once and walks the list (`plan_children`, one child at a time, so
no process builds every child at once); each child is its own request `<parent>/<key>` with its
own ledger entry and a context holding only its item and the shared entries the burst names.
The parent's ledger entry keeps a `BurstTally`: which children delivered or failed, as two
bitmaps (a 10,000-item burst is 2.5 KB) and the reasons of the first few failures, so counting
a child twice is impossible; a failed child replayed from its dead letter that delivers moves
from failed to delivered.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from shared.errors import PermanentError
from shared.events import CHILD_SEPARATOR, Burst, Delivery, ReportRequested

# `{{ item.owner_email }}` in a delivery field: the only placeholder a burst delivery takes
# (no Jinja: a delivery is computed in the fetcher, outside any sandbox, and linearly).
ITEM_PLACEHOLDER = re.compile(r"\{\{\s*item((?:\.\w+)+)\s*\}\}")
KEY_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
FAILURE_REASONS_KEPT = 50  # the reasons of the first failures; every failure is in the bitmap
BurstOutcome = Literal["delivered", "failed", "cancelled"]


class ChildRefused(PermanentError):
    """One item cannot become a child (its key, its deliveries): that child fails alone."""


def lookup(value: Any, dotted: str) -> Any:
    """`value["a"]["b"]` for "a.b" (list positions as numbers); KeyError when absent."""
    for part in dotted.split("."):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise KeyError(part)
    return value


def items_at(context: Mapping[str, Any], burst: Burst, *, max_items: int) -> list[Any]:
    """The list the burst goes over; a PermanentError naming the path when it is not one."""
    try:
        found = lookup(context, burst.over)
    except KeyError as missing:
        known = ", ".join(sorted(context)) or "nothing"
        raise PermanentError(
            f"burst.over '{burst.over}': no '{missing.args[0]}' in the fetched data "
            f"(top level has: {known})"
        ) from None
    if not isinstance(found, list):
        raise PermanentError(
            f"burst.over '{burst.over}' is a {type(found).__name__}, not a list of items"
        )
    if len(found) > max_items:
        raise PermanentError(
            f"burst.over '{burst.over}' has {len(found):,} items, over the limit of "
            f"{max_items:,} (PRESSROOM_BURST_MAX_ITEMS)"
        )
    return found


def child_id(parent: str, key: str) -> str:
    return f"{parent}{CHILD_SEPARATOR}{key}"


def parent_of(request_id: str) -> str | None:
    """The parent of a burst's child id, else None."""
    parent, sep, _ = request_id.partition(CHILD_SEPARATOR)
    return parent if sep else None


def child_key(item: Any, field: str) -> str:
    """The item's key as a child id segment, or ChildRefused saying why it cannot be one."""
    try:
        value = lookup(item, field)
    except KeyError:
        raise ChildRefused(f"the item has no '{field}' (burst.key)") from None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ChildRefused(f"its '{field}' is a {type(value).__name__}, not a text or a number")
    key = str(value)
    if not KEY_PATTERN.match(key):
        raise ChildRefused(
            f"its '{field}' {key[:80]!r} is not usable in a request id (letters, digits, "
            "'_' and '-', at most 64, starting with a letter or digit)"
        )
    return key


def _fill_text(text: str, item: Any) -> str:
    def value(match: re.Match[str]) -> str:
        path = match.group(1)[1:]
        try:
            found = lookup(item, path)
        except KeyError:
            raise ChildRefused(
                f"its deliveries use {{{{ item.{path} }}}}, which it lacks"
            ) from None
        if isinstance(found, dict | list) or found is None:
            raise ChildRefused(f"item.{path} is not a text or a number")
        return str(found)

    filled = ITEM_PLACEHOLDER.sub(value, text)
    if "{{" in ITEM_PLACEHOLDER.sub("", text):
        raise ChildRefused(f"burst delivery field {text[:80]!r}: only {{{{ item.<field> }}}} works")
    return filled


def fill(value: Any, item: Any) -> Any:
    """A delivery field with every `{{ item.… }}` replaced by the item's value."""
    if isinstance(value, str):
        return _fill_text(value, item)
    if isinstance(value, list):
        return [fill(v, item) for v in value]
    if isinstance(value, dict):
        return {k: fill(v, item) for k, v in value.items()}
    return value


def child_deliveries(burst: Burst, item: Any) -> list[Delivery]:
    deliveries = []
    for template in burst.deliver:
        try:
            deliveries.append(Delivery.model_validate(fill(template.model_dump(), item)))
        except ValidationError as error:
            raise ChildRefused(f"its delivery is invalid: {error.errors()[0]['msg']}") from None
    return deliveries


def shared_names(request: ReportRequested) -> list[str]:
    assert request.burst is not None
    root = request.burst.over.split(".")[0]
    if request.burst.shared is None:  # the request's own params, but the list if it is one
        return [name for name in request.params if name != root]
    names = request.burst.shared
    if root in names:
        raise PermanentError(
            f"burst.shared names '{root}', which holds the list itself: each child sees only "
            "its own item"
        )
    return names


def child_context(context: Mapping[str, Any], names: list[str], item: Any) -> dict[str, Any]:
    """What a child's template sees: the shared entries and its own `item`, nothing else."""
    sliced = {name: context[name] for name in names if name in context}
    sliced["item"] = item
    return sliced


@dataclass(frozen=True)
class ChildPlan:
    index: int
    key: str
    request: ReportRequested
    context: dict[str, Any]


@dataclass(frozen=True)
class ChildFailed:
    index: int
    key: str
    reason: str


def plan_children(
    request: ReportRequested, context: Mapping[str, Any], *, max_items: int
) -> Iterator[ChildPlan | ChildFailed]:
    """Each item's child, in order, one at a time; an item that cannot be one fails alone."""
    burst = request.burst
    if burst is None:
        raise ValueError("not a burst request")
    names = shared_names(request)
    seen: set[str] = set()
    base = request.model_dump(exclude={"burst", "deliver", "request_id", "priority"})
    for index, item in enumerate(items_at(context, burst, max_items=max_items)):
        key = f"#{index}"
        try:
            key = child_key(item, burst.key)
            if key in seen:
                raise ChildRefused(f"another item before it has the key '{key}'")
            seen.add(key)
            child = ReportRequested.model_validate(
                {
                    **base,
                    "request_id": child_id(request.request_id, key),
                    "deliver": [d.model_dump() for d in child_deliveries(burst, item)],
                    "priority": "bulk",
                    "parent": request.request_id,
                    "burst_index": index,
                }
            )
        except ChildRefused as refused:
            yield ChildFailed(index, key, f"item {index} ({key}): {refused.reason}")
            continue
        except ValidationError as error:
            yield ChildFailed(index, key, f"item {index} ({key}): {error.errors()[0]['msg']}")
            continue
        yield ChildPlan(index, key, child, child_context(context, names, item))


class FailedChild(BaseModel):
    key: str
    reason: str


def _bits(size: int) -> str:
    return base64.b64encode(bytes((size + 7) // 8)).decode()


def _get(bitmap: str, index: int) -> bool:
    raw = base64.b64decode(bitmap)
    return bool(raw[index // 8] & (1 << (index % 8)))


def _set(bitmap: str, index: int, on: bool) -> str:
    raw = bytearray(base64.b64decode(bitmap))
    if on:
        raw[index // 8] |= 1 << (index % 8)
    else:
        raw[index // 8] &= ~(1 << (index % 8)) & 0xFF
    return base64.b64encode(bytes(raw)).decode()


def _count(bitmap: str) -> int:
    return sum(bin(b).count("1") for b in base64.b64decode(bitmap))


def _both(first: str, second: str, *, keep: int, drop: int) -> int:
    """How many positions hold `keep` in the first bitmap and `drop` in the second."""
    count = 0
    for a, b in zip(base64.b64decode(first), base64.b64decode(second), strict=True):
        a = a if keep else ~a & 0xFF
        b = b if drop else ~b & 0xFF
        count += bin(a & b).count("1")
    return count


class BurstTally(BaseModel):
    """A parent's children: how many delivered, failed (and why, the first few) or were
    cancelled. Two bits per child, in two bitmaps: delivered (1, 0), failed (0, 1), cancelled
    (1, 1) — a third bitmap would make a 10,000-child parent's entry, written once per child,
    half as big again."""

    total: int = Field(ge=0, description="Children planned (items in the list).")
    delivered_bits: str = Field(
        description="Bitmap (base64) by index: delivered (cancelled: set in both)."
    )
    failed_bits: str = Field(
        description="Bitmap (base64) by index: failed (cancelled: set in both)."
    )
    failures: dict[int, FailedChild] = Field(
        default_factory=dict, description=f"The first {FAILURE_REASONS_KEPT} failures' reasons."
    )

    @classmethod
    def planned(cls, total: int) -> BurstTally:
        return cls(total=total, delivered_bits=_bits(total), failed_bits=_bits(total))

    @property
    def delivered(self) -> int:
        return _both(self.delivered_bits, self.failed_bits, keep=1, drop=0)

    @property
    def failed(self) -> int:
        return _both(self.delivered_bits, self.failed_bits, keep=0, drop=1)

    @property
    def cancelled(self) -> int:
        return _both(self.delivered_bits, self.failed_bits, keep=1, drop=1)

    @property
    def complete(self) -> bool:
        return _count(self.delivered_bits) + self.failed >= self.total

    def outcome_of(self, index: int) -> BurstOutcome | None:
        if not 0 <= index < self.total:
            return None
        delivered, failed = _get(self.delivered_bits, index), _get(self.failed_bits, index)
        if delivered:
            return "cancelled" if failed else "delivered"
        return "failed" if failed else None

    def is_delivered(self, index: int) -> bool:
        return self.outcome_of(index) == "delivered"

    def record(
        self, index: int, key: str, outcome: BurstOutcome, reason: str = ""
    ) -> BurstTally | None:
        """The tally with this child's outcome, or None when nothing changes (idempotent).
        A delivered child stays delivered; a failed or cancelled one that delivers after all
        (a replay; a delivery under way when the cancel came) moves over; a child's first
        failure or cancel stands."""
        if not 0 <= index < self.total:
            return None
        now = self.outcome_of(index)
        if now == "delivered" or (now is not None and outcome != "delivered"):
            return None
        bits = {"delivered": (True, False), "failed": (False, True), "cancelled": (True, True)}
        delivered, failed = bits[outcome]
        failures = {i: f for i, f in self.failures.items() if i != index}
        if outcome == "failed" and len(failures) < FAILURE_REASONS_KEPT:
            failures[index] = FailedChild(key=key, reason=reason or outcome)
        return self.model_copy(
            update={
                "delivered_bits": _set(self.delivered_bits, index, delivered),
                "failed_bits": _set(self.failed_bits, index, failed),
                "failures": failures,
            }
        )

    def summary(self) -> str:
        """`delivered 9,998, failed 2 (a, b)` — the parent's outcome in one line."""
        text = f"delivered {self.delivered:,}, failed {self.failed:,}"
        if self.cancelled:
            text += f", cancelled {self.cancelled:,}"
        waiting = self.total - self.delivered - self.failed - self.cancelled
        if waiting > 0:
            text += f", waiting {waiting:,}"
        if self.failures:
            keys = ", ".join(f.key for _, f in sorted(self.failures.items())[:10])
            more = self.failed - min(len(self.failures), 10)
            text += f" (failed: {keys}{f' and {more:,} more' if more > 0 else ''})"
        return text
