"""The lending commands: ``offer``, ``request``, ``loan`` and ``schedule``."""
