"""Test double of the ``comfy`` package (only the modules the pack imports)."""
