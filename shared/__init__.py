"""The kit every Pressroom stage process needs: events, settings, errors, the bus, the stage
runner, its adapters and observability (docs/architecture.md, "The house")."""

from shared.startup import defer_aiohttp

defer_aiohttp()
