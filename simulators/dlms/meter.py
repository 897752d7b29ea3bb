"""One simulated meter's identity, secrets and mutable state (relay, credit, tokens, counters, faults)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

from simulators.dlms.model import Consumption

#: The test keys published in the DLMS UA Green Book's examples: a simulator default, never a real meter's.
DEFAULT_EK = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
DEFAULT_AK = bytes.fromhex("D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF")
DEFAULT_PASSWORD = b"12345678"
#: "SIM" stands where a real meter has its three-letter FLAG manufacturer id.
FLAG_ID = b"SIM"
PUBLIC_CLIENT = 16
MANAGEMENT_CLIENT = 1
SERVER_LOGICAL = 1
PRICE_MINOR_PER_KWH = 25  # tariff of the prepayment model: 0.25 currency units per kWh


@dataclass(frozen=True, slots=True)
class Secrets:
    """What the meter expects: LLS password; with ciphering, the suite 0 global unicast keys."""

    password: bytes = DEFAULT_PASSWORD
    cipher: bool = False
    encryption_key: bytes = DEFAULT_EK
    authentication_key: bytes = DEFAULT_AK


@dataclass(frozen=True, slots=True)
class MeterSpec:
    meter_id: str
    number: int
    secrets: Secrets

    @property
    def system_title(self) -> bytes:
        return FLAG_ID + self.number.to_bytes(5, "big")

    @property
    def logical_device_name(self) -> bytes:
        """16 octets: FLAG id and 13 characters (Blue Book 4.7.1)."""
        return FLAG_ID + f"{self.number:013d}".encode()

    @property
    def serial(self) -> str:
        return f"{20_000_000 + self.number}"


@dataclass
class MeterState:
    """Everything that changes while the simulator runs; one per meter, shared by its connections."""

    spec: MeterSpec
    consumption: Consumption
    now: Callable[[], dt.datetime]
    faults: frozenset[str] = frozenset()
    drift_s: float = 0.0
    clock_offset_s: float = 0.0
    remote_connected: bool = True
    credit_minor: int = 0
    credit_since: dt.datetime | None = None  # when the prepaid credit started to count down
    used_tokens: set[str] = field(default_factory=set)
    last_token: str = ""
    last_token_time: dt.datetime | None = None
    token_status: int = 0
    client_ic_seen: int = -1
    server_ic: int = 1
    clock_adjusted_at: set[int] = field(default_factory=set)

    def meter_time(self) -> dt.datetime:
        """The meter's own clock: true time plus drift (fault) plus what a SET of the clock changed."""
        return self.now() + dt.timedelta(seconds=self.drift_s + self.clock_offset_s)

    def credit(self) -> int:
        """Remaining credit in minor currency units: the prepaid amount less the energy used since."""
        since = self.credit_since or self.consumption.origin
        used_wh = self.consumption.energy_import(self.now()) - self.consumption.energy_import(since)
        return self.credit_minor - used_wh * PRICE_MINOR_PER_KWH // 1000

    def add_credit(self, minor: int) -> None:
        self.credit_minor += minor

    def output_connected(self) -> bool:
        """The relay: closed while remote control leaves it connected and credit remains."""
        return self.remote_connected and self.credit() > 0

    def next_server_ic(self) -> int:
        ic = self.server_ic
        self.server_ic = (self.server_ic + 1) & 0xFFFFFFFF
        return ic


def token_check_digit(digits19: str) -> str:
    return str(sum(int(c) for c in digits19) % 10)


def make_token(amount_minor: int, nonce: int) -> str:
    """A simulator credit token: 8 digits of amount (minor units), 11 digits of nonce, one check digit.

    Real STS tokens are 20 encrypted digits; the simulator keeps the shape and the failure modes (format,
    check, reuse) without the cryptography."""
    body = f"{amount_minor:08d}{nonce:011d}"
    if len(body) != 19:
        raise ValueError(f"amount {amount_minor} or nonce {nonce} too large for a 20-digit token")
    return body + token_check_digit(body)
