"""Green Button (NAESB ESPI) "Download My Data" feeds for a consumer's usage points."""
