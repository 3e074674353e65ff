"""Test double of ``comfy_api``."""
