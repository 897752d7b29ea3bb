"""The one SQL layer under both stores: what is written once, with the hooks each database fills in."""
