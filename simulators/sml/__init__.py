"""An SML stream: a German household meter's optical interface, on a TCP port or a pty, with
fault injection."""
