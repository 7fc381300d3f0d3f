"""The hot path: raw samples -> normalized, type-checked, time-stamped readings -> spool.

Modules: ``reading`` (the values), ``normalize`` and ``units`` (per-device rules),
``fieldtypes`` (types pinned per measurement), ``lineprotocol`` (encoding), ``timesource``
(every clock decision), ``intake`` (where a device's samples enter).
"""
