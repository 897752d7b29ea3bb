"""The object maps P1 and SML meters name: the model's reader (gateway/model/objectmaps.py), the
shipped maps and those in the section's object_dirs, with the problems found reading them."""

from __future__ import annotations

from gateway.model.objectmaps import read_object_maps as object_maps

__all__ = ["object_maps"]
