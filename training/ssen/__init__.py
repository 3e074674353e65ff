"""SSEN training: data (``data``), metrics (``metrics``) and the resumable recipe (``train``); the CLI front end
is ``aware-restore train-ssen``."""
