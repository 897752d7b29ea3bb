"""The M-Bus object maps: the model's reader (gateway/model/objectmaps.py), shipped maps
(gateway/profiles/objects/mbus_*.toml) and a user's folders."""

from __future__ import annotations

from gateway.model.objectmaps import object_maps

__all__ = ["object_maps"]
