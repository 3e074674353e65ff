"""SSEN training: the photo set from registry packages (``photos``), data (``data``), metrics (``metrics``), the
held-out protocol (``heldout``) and the resumable recipe (``train``; GPU: ``gpu_train.sh``); the CLI front end is
``aware-restore train-ssen``."""
