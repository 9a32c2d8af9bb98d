"""A faithful first-party Anthropic Messages API on loopback, with scripted faults.

Start one in a nursery and point any client at the URL it returns::

    emu = Emulator()
    url = await nursery.start(emu.run)          # "http://127.0.0.1:PORT"
    emu.script("429:retry_after=2", "overloaded_midstream:after=4")

See ``emulator.router`` for the endpoints, ``emulator.server`` for serving them,
``emulator.faults`` for the fault specs, ``emulator.tokens`` and ``emulator.responses`` for
the deterministic content and usage.
"""

from .faults import Fault as Fault
from .faults import FaultSpecError as FaultSpecError
from .faults import parse_fault as parse_fault
from .server import Emulator as Emulator
from .server import RecordedRequest as RecordedRequest
from .server import serve_emulator as serve_emulator

__all__ = [
    "Emulator",
    "Fault",
    "FaultSpecError",
    "RecordedRequest",
    "parse_fault",
    "serve_emulator",
]
