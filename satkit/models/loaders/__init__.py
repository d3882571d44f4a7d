"""One small module per way of naming a model; :mod:`satkit.models.registry` holds the table that picks one.

Each loader turns a spec into a :class:`~satkit.models.wrapper.LoadedModel`. What every
load shares (the untrusted-file guard, silencing timm/torch logging, the file-exists
check, the device move) happens once, in :func:`satkit.models.registry.load_model`.
"""
