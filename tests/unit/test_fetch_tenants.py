"""Credentials and named sources bound to the calling systems that may use them (`tenants:`),
specified without a bus: a fake adapter records what would have been fetched."""

from __future__ import annotations

from typing import Any

import pytest

from services.fetcher.access import binding_warnings, may_use
from services.fetcher.cache import SourceCache, cache_key
from services.fetcher.core import gather_context
from shared.adapters.memory import MemoryKeyValue
from shared.errors import PermanentError
from shared.events import ReportRequested, Source
from shared.settings import Settings

CONFIG: dict[str, Any] = {
    "source_credentials": {
        "beta-crm": {"token": "beta-token", "base_url": "http://crm.test/api", "tenants": ["beta"]},
        "ops-crm": {"token": "ops-token", "base_url": "http://ops.test/api"},
        "shared-crm": {"token": "t", "base_url": "http://shared.test", "tenants": ["*"]},
    },
    "sources": {
        "beta-accounts": {
            "kind": "http",
            "url": "http://crm.test/api/accounts",
            "credentials": "beta-crm",
            "tenants": ["beta"],
        },
        "ops-accounts": {"kind": "http", "url": "http://ops.test/api/accounts"},
    },
}


class Recording:
    """An adapter that answers with the tenant-free truth: which URL, which credential."""

    def __init__(self) -> None:
        self.fetched: list[dict[str, Any]] = []

    async def fetch(self, source: Source, settings: Settings, *, configured: bool = False) -> Any:
        extra = dict(source.model_extra or {})
        self.fetched.append(extra)
        return {"url": extra.get("url"), "credentials": extra.get("credentials")}


def settings() -> Settings:
    return Settings(**CONFIG)


def request(tenant: str | None, *sources: dict[str, Any], **extra: Any) -> ReportRequested:
    return ReportRequested.model_validate(
        {"request_id": "r1", "template": "weekly.html", "sources": list(sources), **extra}
    ).model_copy(update={"tenant": tenant})


NAMED = {"name": "notes", "source": "beta-accounts"}
BORROWED = {
    "name": "notes",
    "kind": "http",
    "url": "http://crm.test/api/accounts?x=1",
    "credentials": "beta-crm",
}


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        (NAMED, "source 'notes' (config source 'beta-accounts') is not available to alpha"),
        (BORROWED, "source 'notes': credentials 'beta-crm' are not available to alpha"),
        ({"name": "n", "source": "ops-accounts"}, "is not available to alpha"),
        ({**BORROWED, "credentials": "ops-crm"}, "credentials 'ops-crm' are not available"),
    ],
)
async def test_a_tenant_is_refused_another_tenants_source_or_credentials_before_any_fetch(
    source: dict[str, Any], reason: str
) -> None:
    adapter = Recording()
    with pytest.raises(PermanentError) as caught:
        await gather_context(request("alpha", source), {"http": adapter}, settings())
    assert reason in caught.value.reason
    assert "beta-token" not in caught.value.reason and "ops-token" not in caught.value.reason
    assert adapter.fetched == []


@pytest.mark.parametrize("tenant", ["beta", None])
async def test_the_bound_tenant_and_the_operators_identities_keep_access(
    tenant: str | None,
) -> None:
    adapter = Recording()
    context = await gather_context(request(tenant, NAMED), {"http": adapter}, settings())
    assert context["notes"]["credentials"] == "beta-crm"


async def test_unbound_entries_are_the_operators_and_the_single_publishers_only() -> None:
    cfg = settings()
    for who in (None, "publisher"):
        await gather_context(request(who, {"name": "n", "source": "ops-accounts"}), {
            "http": Recording()
        }, cfg)  # fmt: skip
    assert may_use({}, "publisher") and not may_use({}, "alpha")
    assert may_use({"tenants": ["*"]}, "alpha") and not may_use({"tenants": []}, "beta")


async def test_an_unknown_name_lists_only_what_the_tenant_may_use() -> None:
    with pytest.raises(PermanentError) as caught:
        await gather_context(
            request("alpha", {"name": "n", "source": "nope"}), {"http": Recording()}, settings()
        )
    assert "beta-accounts" not in caught.value.reason and "ops-accounts" not in caught.value.reason


async def test_a_bound_sources_cached_answer_is_never_served_to_another_tenant() -> None:
    both = {"tenants": ["beta", "gamma"]}  # beta and gamma both may; alpha may not
    cfg = Settings(
        source_credentials={"beta-crm": {**CONFIG["source_credentials"]["beta-crm"], **both}},
        sources={"beta-accounts": {**CONFIG["sources"]["beta-accounts"], **both}},
    )
    cache = SourceCache(MemoryKeyValue())
    beta, gamma = Recording(), Recording()
    cached = {**NAMED, "cache": 600}
    await gather_context(request("beta", cached), {"http": beta}, cfg, cache)
    await gather_context(request("gamma", cached), {"http": gamma}, cfg, cache)
    assert len(beta.fetched) == 1 and len(gamma.fetched) == 1  # gamma's own fetch, not beta's
    with pytest.raises(PermanentError):  # alpha: refused, cache or not
        await gather_context(request("alpha", cached), {"http": Recording()}, cfg, cache)
    source = Source.model_validate({"name": "x", "kind": "http", "url": "u"})
    assert cache_key(source) == cache_key(source, None) != cache_key(source, "beta")


def test_tenants_must_be_a_list_of_names() -> None:
    for wrong in ("beta", ["Beta!"], [1]):
        creds = {"c": {"token": "t", "base_url": "http://x.test", "tenants": wrong}}
        with pytest.raises(ValueError, match="tenants must be a list"):
            Settings(source_credentials=creds)


def test_config_check_warns_about_unbound_entries_once_there_are_calling_systems() -> None:
    cfg = settings()
    warnings = binding_warnings(cfg, ["alpha", "beta"])
    assert any("credentials 'ops-crm' have no `tenants:`" in w for w in warnings)
    assert any("source 'ops-accounts' has no `tenants:`" in w for w in warnings)
    assert not any("'beta-crm'" in w for w in warnings)
    plain = Settings(source_credentials={"c": {"token": "t", "base_url": "http://x.test"}})
    assert binding_warnings(plain, ["publisher"]) == []  # one publisher: nothing to bind
    assert binding_warnings(plain, ["publisher", "alpha"])


async def test_the_operators_cached_answer_is_not_read_by_writing_its_spec_out() -> None:
    """A review's finding: a tenant that wrote an unbound named source's spec into its own
    request (no `source:` name, a year of cache) read the operator's cached answer."""
    cache, cfg = SourceCache(MemoryKeyValue()), settings()  # type: ignore[arg-type]
    operator = Recording()
    named = {"name": "n", "source": "ops-accounts"}
    await gather_context(request(None, named, use_cache=True), {"http": operator}, cfg, cache)
    written = {
        "name": "n",
        "kind": "http",
        "url": cfg.sources["ops-accounts"]["url"],
        "cache": 31536000,
    }
    tenant = Recording()
    await gather_context(request("alpha", written), {"http": tenant}, cfg, cache)
    assert len(tenant.fetched) == 1  # not from the operator's cache entry: fetched (or refused)


async def test_a_tenants_own_file_source_reads_only_its_folder(tmp_path: Any) -> None:
    from services.fetcher.sources.file import FileSource

    (tmp_path / "beta").mkdir()
    (tmp_path / "alpha").mkdir()
    (tmp_path / "beta" / "accounts.json").write_text('{"iban": "DE89-canary"}')
    (tmp_path / "alpha" / "mine.json").write_text('{"ok": 1}')
    cfg = Settings(**{**CONFIG, "data_files_dir": tmp_path})
    files = {"file": FileSource()}
    theirs = {"name": "loot", "kind": "file", "path": "beta/accounts.json"}
    with pytest.raises(PermanentError, match="reads only its folder of the data folder"):
        await gather_context(request("alpha", theirs), files, cfg)
    around = {"name": "loot", "kind": "file", "path": "alpha/../beta/accounts.json"}
    with pytest.raises(PermanentError, match="reads only its folder"):
        await gather_context(request("alpha", around), files, cfg)
    mine = {"name": "mine", "kind": "file", "path": "alpha/mine.json"}
    assert (await gather_context(request("alpha", mine), files, cfg))["mine"] == {"ok": 1}
    # The operator (and the schedules) read the whole data folder as before.
    assert (await gather_context(request(None, theirs), files, cfg))["loot"]["iban"]
