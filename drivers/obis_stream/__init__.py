"""Meters that push OBIS-coded telegrams on a byte stream: DSMR P1 and SML, on a serial port or
over TCP (ser2net). One reading loop per port; the protocols differ only in framing and decoding
(p1.py, sml.py)."""
