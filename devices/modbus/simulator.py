"""Modbus RTU slaves on a pseudo-terminal, played by pymodbus's serial server.

pymodbus (``pip install sensor-gateway[modbus]``) is an independent, well-kept
implementation of the protocol, so the driver is checked against someone else's
reading of the standard, not its own. Its server opens a serial port itself, so the
simulator makes two pseudo-terminals and copies bytes between them: the gateway opens
:attr:`ModbusSimulator.path`. The copying is where the line misbehaves on demand::

    sim = ModbusSimulator([SimDevice(1, [SimData(0, values=[230], datatype=DataType.REGISTERS)])])
    await sim.start()                       # the gateway reads sim.path
    sim.line.corrupt(2)                     # flip a bit in the next 2 answers
    await sim.stop()

Run ``python -m devices.modbus.simulator`` for a pty with two example slaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import select
import threading
import tty
from collections import deque
from typing import Any

from devices._sink import write_all

__all__ = ["Line", "ModbusSimulator", "example_devices", "main"]

_TICK_S = 0.01


class Line:
    """Copies bytes between the gateway's pty and the server's, misbehaving on demand.

    Attributes:
        requests: bytes the gateway sent so far.
        mute: drop every answer (a broken A/B wire).
        silent: slave addresses whose answers are dropped (a slave switched off).
    """

    def __init__(self, gateway_fd: int, server_fd: int) -> None:
        self.requests = 0
        self.mute = False
        self.silent: set[int] = set()
        self._gateway_fd = gateway_fd
        self._server_fd = server_fd
        self._corrupt = 0
        self._inject: deque[bytes] = deque()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="modbus-line", daemon=True)

    def corrupt(self, answers: int = 1) -> None:
        """Flip a bit in the next ``answers`` answers (their CRC no longer matches)."""
        with self._lock:
            self._corrupt += answers

    def inject(self, data: bytes) -> None:
        """Send ``data`` to the gateway at once (noise, an answer nobody asked for)."""
        with self._lock:
            self._inject.append(data)

    def start(self) -> None:
        """Start copying (in a thread)."""
        self._thread.start()

    def stop(self) -> None:
        """Stop copying."""
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        for fd in (self._gateway_fd, self._server_fd):
            os.set_blocking(fd, False)
        while not self._stop.is_set():
            with self._lock:
                pending = list(self._inject)
                self._inject.clear()
            for data in pending:
                self._send(self._gateway_fd, data)
            ready = select.select([self._gateway_fd, self._server_fd], [], [], _TICK_S)[0]
            for fd in ready:
                data = self._read(fd)
                if not data:
                    continue
                if fd == self._gateway_fd:
                    self.requests += len(data)
                    self._send(self._server_fd, data)
                elif not self.mute and data[0] not in self.silent:
                    self._send(self._gateway_fd, self._maybe_corrupt(data))

    def _maybe_corrupt(self, data: bytes) -> bytes:
        with self._lock:
            if not self._corrupt:
                return data
            self._corrupt -= 1
        return data[:-1] + bytes([data[-1] ^ 0x01])

    def _read(self, fd: int) -> bytes:
        try:
            return os.read(fd, 4096)
        except BlockingIOError:
            return b""
        except OSError as err:
            if err.errno == errno.EIO:  # the other side is closed right now
                self._stop.wait(0.05)
                return b""
            raise

    @staticmethod
    def _send(fd: int, data: bytes) -> None:
        with contextlib.suppress(TimeoutError, OSError):
            write_all(fd, data, timeout=0.5)


class ModbusSimulator:
    """pymodbus's RTU server for ``devices`` (``pymodbus.simulator.SimDevice``) on a pty."""

    def __init__(self, devices: list[Any], baudrate: int = 9600) -> None:
        self.devices = devices
        self.baudrate = baudrate
        self._gateway_master, self._gateway_slave = os.openpty()
        self._server_master, self._server_slave = os.openpty()
        for fd in (self._gateway_slave, self._server_slave):
            tty.setraw(fd)
        self.path = os.ttyname(self._gateway_slave)
        self.line = Line(self._gateway_master, self._server_master)
        self._server: Any = None

    async def start(self) -> None:
        """Start the server and the line; returns once the server has its port open."""
        from pymodbus.server import ModbusSerialServer  # an optional dependency

        self._server = ModbusSerialServer(
            self.devices,
            port=os.ttyname(self._server_slave),
            baudrate=self.baudrate,
            ignore_missing_devices=True,  # on a real bus, nobody answers for an absent slave
        )
        await self._server.serve_forever(background=True)  # returns with the port open
        self.line.start()

    async def stop(self) -> None:
        """Stop the server and the line and close the ptys."""
        if self._server is not None:
            await self._server.shutdown()
        self.line.stop()
        for fd in (
            self._gateway_master,
            self._gateway_slave,
            self._server_master,
            self._server_slave,
        ):
            with contextlib.suppress(OSError):
                os.close(fd)


def example_devices() -> list[Any]:
    """Two slaves: 1 an energy meter (float32 input registers), 2 a thermostat."""
    from pymodbus.simulator import DataType, SimData, SimDevice

    bits = [SimData(0, count=16, values=False, datatype=DataType.BITS)]
    meter = SimDevice(
        1,
        (
            bits,
            bits,
            [SimData(0, values=[1], datatype=DataType.REGISTERS)],
            [SimData(0, values=[230.5, 1.25, 288.125], datatype=DataType.FLOAT32)],
        ),
    )
    thermostat = SimDevice(
        2,
        (
            bits,
            bits,
            [SimData(0, values=[215, 0x10000 - 50], datatype=DataType.REGISTERS)],
            [SimData(0, values=[0], datatype=DataType.REGISTERS)],
        ),
    )
    return [meter, thermostat]


def main() -> None:
    """Open a pseudo-terminal, print its path and play the example slaves until Ctrl-C."""

    async def serve() -> None:
        sim = ModbusSimulator(example_devices())
        await sim.start()
        print(f"simulated Modbus RTU slaves 1 and 2 on {sim.path}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await sim.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


if __name__ == "__main__":
    main()
