"""The gate suite: what a stage must pass (pytest --pyargs canary_checks.suites.gate --stage 25)."""
