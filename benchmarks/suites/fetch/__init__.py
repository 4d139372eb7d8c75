"""The fetch suite: ``aiopop fetch`` against mpop, fetchmail and getmail6 (needs root)."""
