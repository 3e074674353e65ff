"""Training recipes (front ends of the library; nothing in ``core/`` imports them). ``training.ssen`` trains the
SSEN model that ships in ``core/ssen/weights``."""
