"""DLMS/COSEM (IEC 62056) client driver: wrapper and HDLC links, association and security
(lowest, low, HLS-GMAC, suite 0 global ciphering), reads of Data, Register, Extended register,
Clock and Profile generic, polled on the neutral poll machinery (drivers/polling)."""
