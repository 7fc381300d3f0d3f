"""Data-driven driver cases: one folder per case, run by ``tests/test_driver_<name>.py``.

Layout of ``tests/driver_cases/<driver>/<case>/``:

``config.toml``
    The driver's options (a serial case may leave out ``port``).
``input.txt`` (serial drivers)
    Frames, one per line, read as raw bytes (so invalid UTF-8 can be tested).
``input.stream`` (serial drivers, instead of ``input.txt``)
    Bytes as the device sends them (e.g. multi-line telegrams), cut into frames by the
    driver's own framer; ``expected.json`` has one entry per frame.
``input.jsonl`` (MQTT drivers)
    One message per line: ``{"topic": …, "payload": "…"}``, or ``"payload_hex"`` for
    bytes that are not UTF-8.
``expected.json``
    One entry per input, in order: a list of samples (``[]`` when the input is skipped),
    each ``{"fields": {…}, "tags": {…}, "time_ns": …}`` (``tags`` and ``time_ns`` may be
    left out for ``{}`` and ``null``), or ``{"error": {"reason": …, "message_contains": …}}``.
    Instead of a list, ``{"init_error": "…"}`` expects the options to be refused.

Values compare with their types: ``40`` (int) does not equal ``40.0`` (float). The file is
read with Python's ``json``, so ``NaN`` and ``Infinity`` may be written for float NaN/inf.
"""
