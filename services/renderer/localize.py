"""Numbers, percentages, money and dates written as the request's `locale` writes them (Babel)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from functools import lru_cache
from typing import Any

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_time
from babel.numbers import format_currency, parse_pattern

from shared.errors import TemplateError


@lru_cache(maxsize=64)
def parse_locale(value: str) -> Locale:
    """'de-DE', 'de_DE', 'zh-Hant-TW' → a Babel Locale; an unknown one is a TemplateError."""
    try:
        return Locale.parse(value.strip().replace("-", "_"))
    except (UnknownLocaleError, ValueError, TypeError):
        raise TemplateError(
            f"unknown locale '{value}': use a language tag such as 'en', 'de-DE' or 'zh-Hant-TW'"
        ) from None


def lang_tag(value: Any) -> str:
    """The HTML lang attribute for a locale (BCP 47, hyphens); 'en' without one."""
    if not value:
        return "en"
    locale = parse_locale(str(value))
    parts = [locale.language, locale.script, locale.territory, locale.variant]
    return "-".join(p for p in parts if p)


def _as_float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def number(value: Any, digits: int, locale: str) -> str:
    """12345.6 → '12.346' (de), '12,346' (en), '१२,३४६' only if the locale says so."""
    return _decimal(value, digits, locale, percent=False)


def percent(value: Any, digits: int, locale: str) -> str:
    """87.5 (already in percent, like the `percent` filter) → '87,5 %' (de), '87.5%' (en)."""
    return _decimal(value, digits, locale, percent=True)


def _decimal(value: Any, digits: int, locale: str, *, percent: bool) -> str:
    """`value` with exactly `digits` decimals in the locale's number or percent pattern; what is
    not a number is shown as it is."""
    number_ = _as_float(value)
    if number_ is None:
        return str(value)
    loc = parse_locale(locale)
    formats = loc.percent_formats if percent else loc.decimal_formats
    pattern = parse_pattern(formats[None].pattern)
    pattern.frac_prec = (digits, digits)
    return str(pattern.apply(number_ / 100 if percent else number_, loc))


def money(value: Any, currency: str, locale: str) -> str:
    number_ = _as_float(value)
    if number_ is None:
        return str(value)
    return str(format_currency(number_, currency.upper(), locale=parse_locale(locale)))


def as_datetime(value: Any) -> datetime | date | None:
    if isinstance(value, datetime | date):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    return None


def when(value: datetime, locale: str) -> str:
    """A timestamp as the locale writes it, in UTC: '23.11.2026, 22:49 UTC' (de)."""
    loc = parse_locale(locale)
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    on = format_date(value, "medium", locale=loc)
    at = format_time(value, "short", locale=loc)
    return f"{on} {at} UTC"


def day(value: date, locale: str, style: str = "medium") -> str:
    return str(format_date(value, style, locale=parse_locale(locale)))
