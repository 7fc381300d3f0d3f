"""The gateway's exceptions: one root, a few kinds below it.

Third-party errors are translated into these at the boundary (``raise … from err``),
so the supervisor and the CLI only ever reason about this small set.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Root of every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    """The configuration is invalid.

    ``problems`` holds one ``(path, message)`` pair per mistake, so ``check-config``
    can print all of them at once.
    """

    def __init__(self, problems: list[tuple[str, str]], source: str | None = None) -> None:
        self.problems = problems
        self.source = source
        where = f" in {source}" if source else ""
        lines = [f"{path}: {msg}" if path else msg for path, msg in problems]
        super().__init__(f"{len(problems)} configuration error(s){where}:\n  " + "\n  ".join(lines))


class DeviceUnavailable(GatewayError):
    """A device cannot be reached right now (unplugged, port busy, broker away).

    Temporary: the supervisor restarts the device with backoff.
    """


class RejectedInput(GatewayError):
    """One frame or payload could not be decoded. The device keeps running.

    ``reason`` is a short machine-friendly counter key (``"malformed"``, ``"checksum"``,
    ``"too_large"``…); the message says what was wrong in words.
    """

    def __init__(self, message: str, reason: str = "malformed") -> None:
        self.reason = reason
        super().__init__(message)


class SinkUnavailable(GatewayError):
    """A sink cannot take data right now; readings stay in the spool."""


class SpoolError(GatewayError):
    """The spool cannot be opened or written (permissions, corruption, disk)."""
