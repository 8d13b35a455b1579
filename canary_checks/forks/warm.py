"""Imported by the fork server of :mod:`canary_checks.forks` only: what every suite run imports, imported once —
pytest, the installed pytest plugins, the checks and SciPy. A module that fails to import is left to the run, which
reports it as ``python -m pytest`` would."""

from importlib import import_module
from importlib.metadata import entry_points

WARM = ("pytest", "canary_checks.plugin", "canary_checks.gates", "canary_checks.compare", "scipy.stats",
        "prometheus_api_client")  # fmt: skip

SKIPPED_PLUGINS = {"locust"}
"""Plugins a suite run turns off (``-p no:locust``): Locust's patches the standard library with gevent's on import."""

for _name in [*WARM, *(e.module for e in entry_points(group="pytest11") if e.name not in SKIPPED_PLUGINS)]:
    try:
        import_module(_name)
    except Exception:  # the run itself says what is wrong with it
        continue
