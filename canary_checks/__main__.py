"""``python -m canary_checks`` is the ``canary-checks`` command."""

from canary_checks.cli import main

main()
