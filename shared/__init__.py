"""The kit every Pressroom stage process needs: events, settings, errors, the bus, the stage
runner, its adapters and observability (docs/architecture.md, "The house")."""

from shared.startup import defer_aiohttp, httpx_without_its_cli, structlog_without_rich

defer_aiohttp()
structlog_without_rich()
httpx_without_its_cli()
