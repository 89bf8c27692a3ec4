"""What a render process keeps between renders: font configurations and parsed stylesheets.

WeasyPrint builds a FontConfiguration per render unless it is given one: building it costs CPU,
and its memory (fontconfig, Pango) is never returned — a render process grew by ~0.25 MiB per
report. Here a process keeps:

- one FontConfiguration per font folder set (the FONTCONFIG_FILE `fonts.configure` wrote, so a
  change of PRESSROOM_FONTS_DIR takes effect on the next render). It refuses `@font-face`: a
  template that declares its own fonts gets a configuration of its own per template version
  (a bounded LRU; one that collects too many faces is dropped), so one template's fonts never
  reach another's renders;
- the parsed page CSS, and each `<style>` element's parsed stylesheet, in bounded LRUs;
- Python's cyclic garbage collector tuned for layout (`tune_collector`).

Renders are byte-identical to renders with fresh objects (tests/unit/test_render_warm.py).
"""

from __future__ import annotations

import atexit
import gc
import os
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

TEMPLATE_FONT_CONFIGS = 8  # template versions with @font-face whose fonts a process keeps
MAX_TEMPLATE_FACES = 64  # faces one such configuration may collect before it is dropped
PAGE_CSS_KEPT = 16
STYLESHEETS_KEPT = 64
# A <style> using any of these changes per-render state as it is parsed: never reused.
_STATEFUL_CSS = ("@import", "@font-face", "@counter-style", "@color-profile", "@layer")
# Allocations between two young collections (CPython's default: 700). See tune_collector.
GC_YOUNG_THRESHOLD = 20_000


def tune_collector() -> None:
    """Once per render process, after its warm-up (if it has one): what is loaded by then
    (modules, fonts, the layout engine) is moved out of the collector's sight, and young
    collections run every 20,000 allocations instead of every 700.

    A layout allocates boxes by the hundred thousand and most of them live until the PDF is
    written, so at CPython's default the collector traverses them again and again: it took a
    third of a 3,000-row render (one piece: 11.7 s of CPU, 8.2 s tuned, 7.4 s with the
    collector off) and a tenth of a one-page render on average (165 → 146 ms; its full
    collections fall on every few renders). The collector still runs: a layout leaves over a
    million objects in reference cycles, which only it frees. Full collections come rarer too,
    so after a long job the pool collects in the idle process (pool.CappedPool._call) rather
    than leave that garbage to the next render."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


class Lru(Generic[K, V]):
    """A small least-recently-used map."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> V:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)
        return value

    def pop(self, key: K) -> None:
        self._items.pop(key, None)

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[K]:
        return iter(self._items)


class TemplateFonts(BaseException):
    """The shared configuration met an @font-face: render with the template's own one.

    A BaseException, so no `except Exception` on the way (WeasyPrint's or ours) swallows it."""


_shared: dict[str, Any] = {}
_scoped: Lru[tuple[str, str], Any] = Lru(TEMPLATE_FONT_CONFIGS)
_uses_faces: Lru[str, bool] = Lru(256)
_page_css: Lru[str, Any] = Lru(PAGE_CSS_KEPT)
_sheets: Lru[tuple[Any, ...], tuple[Any, list[Any]]] = Lru(STYLESHEETS_KEPT)


def _fontconfig_file() -> str:
    return os.environ.get("FONTCONFIG_FILE", "")


def shared_font_config() -> Any:
    """The process's configuration for the current font folders; it refuses @font-face."""
    key = _fontconfig_file()
    config = _shared.get(key)
    if config is None:
        # Imported here: heavy (WeasyPrint): loaded in render processes, not by every service.
        from weasyprint.text.fonts import FontConfiguration

        class SharedFonts(FontConfiguration):  # type: ignore[misc]
            def add_font_face(self, rule_descriptors: Any, url_fetcher: Any) -> Any:
                raise TemplateFonts()

        config = _shared[key] = SharedFonts()
    return config


def template_font_config(scope: str) -> Any:
    """The configuration of one template version that declares its own fonts."""
    key = (_fontconfig_file(), scope)
    config = _scoped.get(key)
    if config is None:
        # Imported here: heavy (WeasyPrint): loaded in render processes, not by every service.
        from weasyprint.text.fonts import FontConfiguration

        config = _scoped.put(key, FontConfiguration())
    return config


def done_with(scope: str, config: Any) -> None:
    folder = getattr(config, "_folder", None)
    if folder is not None and len(list(Path(folder).iterdir())) > MAX_TEMPLATE_FACES:
        _scoped.pop((_fontconfig_file(), scope))  # data-made faces: start afresh next time


def with_fonts(scope: str, render: Callable[[Any], V]) -> V:
    """`render(font_config)` with the shared configuration, or the template version's own when
    its CSS declares fonts (learnt on its first render, then remembered)."""
    if not _uses_faces.get(scope):
        try:
            return render(shared_font_config())
        except TemplateFonts:
            _uses_faces.put(scope, True)
    config = template_font_config(scope)
    try:
        return render(config)
    finally:
        done_with(scope, config)


def page_css(text: str, url_fetcher: Any) -> Any:
    """The parsed page-defaults stylesheet (it has no URLs: the fetcher never runs)."""
    css = _page_css.get(text)
    if css is None:
        # Imported here: heavy (WeasyPrint): loaded in render processes, not by every service.
        from weasyprint import CSS

        css = _page_css.put(text, CSS(string=text, url_fetcher=url_fetcher))
    return css


def _cached_find_stylesheets(original: Callable[..., Iterator[Any]]) -> Callable[..., Any]:
    """WeasyPrint's find_stylesheets (version 70, one pass over `<style>` and `<link>` as it
    does), with each plain `<style>` parsed once per process."""
    # Imported here: heavy (WeasyPrint): loaded in render processes, not by every service.
    from weasyprint import CSS
    from weasyprint.css import get_child_text, media_queries
    from weasyprint.html import element_has_link_type, parse_url
    from weasyprint.logger import LOGGER
    from weasyprint.urls import URLFetchingError

    def cached(
        wrapper_element: Any,
        device_media_type: Any,
        url_fetcher: Any,
        base_url: Any,
        font_config: Any,
        counter_style: Any,
        color_profiles: Any,
        page_rules: list[Any],
        layers: list[Any],
    ) -> Iterator[Any]:
        shared = {
            "url_fetcher": url_fetcher,
            "media_type": device_media_type,
            "font_config": font_config,
            "counter_style": counter_style,
            "color_profiles": color_profiles,
            "layers": layers,
        }
        for wrapper in wrapper_element.query_all("style", "link"):
            element = wrapper.etree_element
            mime_type = element.get("type", "text/css").split(";", 1)[0].strip()
            if mime_type != "text/css":
                continue
            media_attr = element.get("media", "").strip() or "all"
            media = [media_type.strip() for media_type in media_attr.split(",")]
            if not media_queries.evaluate_media_query(media, device_media_type):
                continue
            if element.tag == "style":
                content = get_child_text(element)
                key = (content, base_url, device_media_type)
                kept = None if layers else _sheets.get(key)
                if kept is None:
                    lowered = content.lower()
                    if layers or any(marker in lowered for marker in _STATEFUL_CSS):
                        # Changes per-render state as it is parsed: parsed every time.
                        yield CSS(
                            string=content, base_url=base_url, page_rules=page_rules, **shared
                        )
                        continue
                    own_rules: list[Any] = []
                    css = CSS(string=content, base_url=base_url, page_rules=own_rules, **shared)
                    if layers:  # an @layer the markers missed: not kept
                        page_rules.extend(own_rules)
                        yield css
                        continue
                    kept = _sheets.put(key, (css, own_rules))
                css, own_rules = kept
                page_rules.extend(own_rules)
                yield css
            elif element.tag == "link" and element.get("href"):
                if not element_has_link_type(element, "stylesheet") or element_has_link_type(
                    element, "alternate"
                ):
                    continue
                href = parse_url(element.get("href"), base_url)
                if href is not None:
                    try:
                        yield CSS(url=href, page_rules=page_rules, _check_mime_type=True, **shared)
                    except URLFetchingError as exception:
                        LOGGER.error("Failed to load stylesheet at %s: %s", href, exception)
                        LOGGER.debug("Error while loading stylesheet:", exc_info=exception)

    return cached


_installed: list[bool] = []


def install_stylesheet_cache() -> None:
    """Parse each template's `<style>` once per process (idempotent)."""
    if _installed:
        return
    # Imported here: heavy (WeasyPrint): loaded in render processes, not by every service.
    import weasyprint.css as wcss

    wcss.find_stylesheets = _cached_find_stylesheets(wcss.find_stylesheets)
    _installed.append(True)


def forget() -> None:
    """Drop everything kept (tests: render as a fresh process would)."""
    _shared.clear()
    _scoped.clear()
    _uses_faces.clear()
    _page_css.clear()
    _sheets.clear()


# Before the interpreter tears modules down (WeasyPrint's __del__ needs them).
atexit.register(forget)
