"""The suites users run: gate (what a stage must pass) and smoke (the canary through its header route).

Run them where they are (`pytest --pyargs canary_checks.suites.gate --stage 25`), or write copies into a service's
repository to extend with `canary-checks init`.
"""
