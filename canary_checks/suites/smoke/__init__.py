"""The smoke suite: the canary through its header route (pytest --pyargs canary_checks.suites.smoke)."""
