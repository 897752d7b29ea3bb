"""A DSMR P1 telegram writer: a household meter whose telegrams go out every second or ten,
on a TCP port (as ser2net serves a P1 cable) or a pty, with fault injection."""
