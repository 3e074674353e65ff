"""Test double of ``comfy.memory_management``: the DynamicVRAM switch (``comfy.ops`` creates Linear weights lazily
while it is on)."""

aimdo_enabled = False
