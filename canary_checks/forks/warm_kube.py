"""Imported by the fork server of :mod:`canary_checks.forks` after :mod:`.warm`, where the suites may read the
Kubernetes API: the official client imports an API's 280 models on the first use of it, 1.1 s of every run that
reads pods."""

import gc
from contextlib import suppress
from importlib import import_module

for _name in ("canary_checks.kube", "kubernetes.client.api.apps_v1_api", "kubernetes.client.api.core_v1_api"):
    with suppress(Exception):  # the run itself says what is wrong with it
        import_module(_name)

gc.freeze()
