"""Shipped object maps (code -> channel) of the coded protocols: DLMS/COSEM, M-Bus, P1, SML.

One TOML file per meter family, in `gateway.model.profiles.ObjectMap`'s shape; loaded by
`gateway.config.objects.load_object_maps`.
"""
