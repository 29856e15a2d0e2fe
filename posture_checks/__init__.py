"""Posture checks: YAML files with a CEL expression over a device's facts, evaluated on the server.

* :mod:`posture_checks.model` - load and validate one check file (errors carry file:line);
* :mod:`posture_checks.evaluator` - PASS, FAIL, UNKNOWN, INAPPLICABLE, ERROR or STALE per check;
* :mod:`posture_checks.enforcement` - allow, warn or block for a result (pure);
* :mod:`posture_checks.exemptions` - per device, user or group, with expiry and reason (pure);
* :mod:`posture_checks.remediation` - remediation Markdown with fact placeholders filled in;
* :mod:`posture_checks.loader` - the catalog from directories, reloaded when files change;
* :mod:`posture_checks.cli` - ``devicetrust checks lint`` and ``devicetrust checks test``.

The built-in catalog lives in ``posture_checks/catalog/``. The agent never
evaluates checks: it reports facts and the server decides.
"""
