"""`python -m services.console.cli`: what `pressroom up` starts its workers with, and what tests
run."""

from services.console.cli import main

main()
