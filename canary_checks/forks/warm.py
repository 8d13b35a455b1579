"""Imported by the fork server of :mod:`canary_checks.forks` only: what every suite run imports, imported once —
pytest, the pytest plugins a run loads, the checks and the SciPy functions they use (:mod:`.warm_kube` adds the
Kubernetes client; ``scipy.stats``, a second of imports only the ``fdr`` correction needs, is preloaded before this
module where a config asks for it). A module that fails to import is left to the run, which reports it as
``python -m pytest`` would."""

import gc
import os
from importlib import import_module
from importlib.metadata import entry_points

WARM = (
    "pytest", "_pytest.debugging", "pdb", "scipy.special", "prometheus_api_client",
    "canary_checks.plugin", "canary_checks.session", "canary_checks.checks", "canary_checks.gates",
    "canary_checks.compare",
)  # fmt: skip

SKIPPED_PLUGINS = {"locust"}
"""Plugins a suite run turns off (``-p no:locust``): Locust's patches the standard library with gevent's on import."""

CONFIGURE_IMPORTS = {"_hypothesis_pytestplugin": ("hypothesis",)}
"""What an installed plugin imports each time a run configures it, beyond its own module: Hypothesis' plugin imports
Hypothesis in ``pytest_configure``, 0.45 s of every suite run in an environment that has it."""

# the plugins a run loads: the installed ones, or with autoloading off (PYTEST_DISABLE_PLUGIN_AUTOLOAD) only those
# PYTEST_PLUGINS names (a fork has the server's environment: a run with another one imports what it lacks itself)
if os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
    _plugins = [name.strip() for name in os.environ.get("PYTEST_PLUGINS", "").split(",") if name.strip()]
else:
    _plugins = [e.module for e in entry_points(group="pytest11") if e.name not in SKIPPED_PLUGINS]
for _name in [*WARM, *_plugins, *(extra for plugin in _plugins for extra in CONFIGURE_IMPORTS.get(plugin, ()))]:
    try:
        import_module(_name)
    except Exception:  # the run itself says what is wrong with it
        continue

gc.freeze()  # what is imported stays: a run's collections never walk it, so its forked pages stay shared
# (warm_kube, preloaded after this module where suites read the Kubernetes API, freezes what it adds)
