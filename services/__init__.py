"""The four services (fetcher, renderer, distributor, scheduler) and, above them, the console."""

import shared  # noqa: F401  # first: its start-up work comes before anything imports nats
