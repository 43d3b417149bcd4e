"""Concrete isolators (see isolator.py), one concern each."""
