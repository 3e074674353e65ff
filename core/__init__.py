"""AwareRestore model library: pure torch (+ diffusers / open_clip / torchvision), no ComfyUI imports."""
