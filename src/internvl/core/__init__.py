"""Leaf utilities shared by every layer: errors and small I/O helpers. Imports nothing from internvl."""
