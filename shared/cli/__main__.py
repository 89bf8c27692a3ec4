"""`python -m shared.cli`: what `pressroom up` starts its workers with, and what tests run."""

from shared.cli import main

main()
