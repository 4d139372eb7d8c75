"""The distance suite: aiopop through a delay proxy (see main.py)."""
