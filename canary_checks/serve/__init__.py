"""``canary-checks serve``: the gate and smoke suites behind Flagger's webhooks.

Flagger calls a webhook URL with ``{"name", "namespace", "phase", "metadata"}`` and advances only on a 2xx answer.
Each hook has its own path here, because the payload does not say which hook it is:

=====================================  ===========================================  =======================
path                                   runs                                          when Flagger calls it
=====================================  ===========================================  =======================
``POST /flagger/pre-rollout``          ``pytest suites/smoke --target canary``       before any traffic moves
``POST /flagger/rollout``              ``pytest suites/gate --stage N``              every analysis interval
``POST /flagger/confirm-traffic-increase``  the gate suite                           before each weight step
``POST /flagger/confirm-promotion``    the gate suite                                before promotion
``GET /healthz``                       nothing (no token needed)                     the Pod's probes
=====================================  ===========================================  =======================

Answers: 200 passed; 412 a gate failed or could not decide (the body names them, and Flagger logs the body);
401 without the shared token (``Authorization: Bearer`` or ``metadata.token``); 429 while a suite of the same
service runs (one at a time per service); 504 when the suite outlasts ``--suite-timeout``. Every call writes
``reports/<run-id>/`` like any other run; the oldest webhook runs are deleted past ``--keep-reports`` runs or
``--reports-max-size`` bytes.

What a client may cost, whoever it is (the token is checked only once the request is in):

- one asyncio loop reads every request, so a slow client holds a buffer, not a thread; suites run on threads, at
  most ``--max-runs`` at once;
- the request line and headers: at most :data:`MAX_HEAD` bytes, within ``--header-timeout`` of connecting
  (else 431, 408); the body: a ``Content-Length`` of at most :data:`MAX_BODY` (else 411 when missing, 400 when
  malformed or negative, 413 when larger, each answered before any of the body is read), in full within
  ``--request-timeout`` of connecting (else 408);
- at most ``--max-connections`` open at once: at the cap, a new connection takes the place of the one that has been
  sending its request the longest (answered 408), so clients that trickle their requests cannot starve the probes
  or Flagger (a real request is sent at once: it is never the oldest still sending); only when every connection
  waits for its suite is the new one answered 503;
- a client that goes away, or a refusal, is one line in the log, and a burst of them one line per
  :data:`LOG_EVERY` seconds.

The package's seams: :mod:`~canary_checks.serve.webhooks` is the calls (tokens, admission, the suites, the answer,
pruning), :mod:`~canary_checks.serve.server` carries them over HTTP within the limits above.
"""

from canary_checks.serve.server import LINGER as LINGER
from canary_checks.serve.server import LOG_EVERY as LOG_EVERY
from canary_checks.serve.server import MAX_BODY, MAX_HEAD, WebhookHTTPServer
from canary_checks.serve.server import WRITE_TIMEOUT as WRITE_TIMEOUT
from canary_checks.serve.webhooks import HOOKS, Reply, ServeOptions, WebhookServer, format_size, parse_size

__all__ = [
    "HOOKS",
    "MAX_BODY",
    "MAX_HEAD",
    "Reply",
    "ServeOptions",
    "WebhookHTTPServer",
    "WebhookServer",
    "format_size",
    "parse_size",
]
