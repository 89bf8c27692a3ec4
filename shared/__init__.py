"""Pressroom's shared package: event models, settings, errors, bus, ledger, store and logging."""
