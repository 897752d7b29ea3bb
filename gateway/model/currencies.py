"""Money amounts in a currency: how many decimals its minor unit allows (ISO 4217).

The table is ISO 4217 "List One" (current currency and funds codes) as published by SIX, the
standard's maintenance agency, dated 2026-01-01: the field CcyMnrUnts of each code, read from
the copy of that list shipped in the PyPI package iso4217 1.16.20260101 (public domain). Codes whose minor
unit the list gives as "N.A." (gold, silver, SDR, XTS, XXX "no currency", ...) have no limit.

A vendor may count finer than ISO (token-based meters often use thousandths): `[mqtt]
currency_decimals` overrides a currency's allowed decimals (`allowed_decimals`). A code that is
not in the list has no limit unless it is overridden.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from types import MappingProxyType

__all__ = ["ISO_4217_PUBLISHED", "MINOR_UNITS", "allowed_decimals", "decimals_of"]

ISO_4217_PUBLISHED = "2026-01-01"


def _codes(decimals: int | None, codes: str) -> dict[str, int | None]:
    return dict.fromkeys(codes.split(), decimals)


#: Currency code -> decimals of its minor unit (None: the list says N.A., no limit).
MINOR_UNITS: Mapping[str, int | None] = MappingProxyType({
    **_codes(0, """
    BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF
    """),
    **_codes(2, """
    AED AFN ALL AMD AOA ARS AUD AWG AZN BAM BBD BDT BMD BND BOB BOV BRL BSD BTN BWP BYN BZD CAD CDF CHE CHF CHW
    CNY COP COU CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF
    IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK
    MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP
    SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD USN UYU UZS VED VES WST XAD XCD XCG
    YER ZAR ZMW ZWG
    """),
    **_codes(3, """
    BHD IQD JOD KWD LYD OMR TND
    """),
    **_codes(4, """
    CLF UYW
    """),
    **_codes(None, """
    XAG XAU XBA XBB XBC XBD XDR XPD XPT XSU XTS XUA XXX
    """),
})


def allowed_decimals(currency: str, overrides: Mapping[str, int] | None = None) -> int | None:
    """Decimals an amount in `currency` may carry: the override, else ISO 4217's minor unit, else
    None (no limit: an N.A. code such as XXX, or a code the list does not have)."""
    if overrides and currency in overrides:
        return overrides[currency]
    return MINOR_UNITS.get(currency)


def decimals_of(amount: Decimal) -> int:
    """Decimals the amount needs: 100.50 -> 1 (the trailing zero says nothing), 10.005 -> 3, 100 -> 0."""
    exponent = amount.normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0
