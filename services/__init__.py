"""The four services (fetcher, renderer, distributor, scheduler) and, above them, the console."""
