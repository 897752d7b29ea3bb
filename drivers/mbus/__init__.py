"""Wired M-Bus (EN 13757-2/-3): a master on a serial line or a TCP converter, polling its slaves."""
