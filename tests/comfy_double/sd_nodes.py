"""Test-double versions of ComfyUI's core SD nodes (``nodes.py``: CheckpointLoaderSimple, CLIPTextEncode, VAEEncode,
VAEDecode) with the same ids, inputs, outputs and return types, over TINY stand-in models.

Real ComfyUI loads an SD2 single-file checkpoint (``comfy.sd.load_checkpoint_guess_config``). The double reads a
tiny stand-in checkpoint written by ``tests/kit/seesr.py`` (``models/checkpoints/512-base-ema.safetensors``):
``first_stage_model.*`` a tiny diffusers AutoencoderKL (×8, 4 latent channels), ``cond_stage_model.*`` a tiny text
encoder (77 tokens per chunk, width 32 = the tiny SeeSR UNet's cross-attention width), ``model.diffusion_model.*``
a placeholder; configs in the file metadata. What the objects return mirrors ``comfy/sd.py``:

* ``CLIP.tokenize(text)`` → ``{"h": [[(token, weight), ...] × 77, ...]}``; ``encode_from_tokens(tokens,
  return_pooled, return_dict)``; ``encode_from_tokens_scheduled(tokens)`` → ``[[cond [1, 77·chunks, D],
  {"pooled_output": [1, D]}]]`` (what CLIPTextEncode returns);
* ``VAE.encode(pixels [B,H,W,C] in [0,1])`` → unscaled latent ``[B,4,H/8,W/8]`` (the posterior mode, pixels cropped
  to a multiple of 8); ``VAE.decode(latent)`` → ``[B,H,W,3]`` in [0,1]; ``encode_tiled``/``decode_tiled`` too.
"""

from __future__ import annotations

import json
import re
import zlib
from pathlib import Path

import comfy.model_management as mm
import comfy.model_patcher
import folder_paths
import torch
from comfy_api.latest import io
from safetensors.torch import load_file, save_file
from torch import nn

DOUBLE_TAG = "aware_restore_tiny_sd2"
TEXT_DIM = 32
VOCAB = 1024
CTX = 77
VAE_CONFIG = {"in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 1,
              "block_out_channels": [8, 8, 8, 8], "norm_num_groups": 4,
              "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4}


class TinyTextEncoder(nn.Module):
    """Token + position embedding, one transformer layer, final LayerNorm (stand-in for OpenCLIP ViT-H)."""

    def __init__(self, dim: int = TEXT_DIM, vocab: int = VOCAB):
        super().__init__()
        self.token = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.zeros(CTX, dim))
        self.layer = nn.TransformerEncoderLayer(dim, 2, dim * 2, dropout=0.0, batch_first=True)
        self.norm = nn.LayerNorm(dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.norm(self.layer(self.token(ids) + self.pos))


class TinyDiffusionModel(nn.Module):
    """Placeholder for the SD2 UNet on the MODEL socket (SeeSR uses its own UNet)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)


def build_vae():
    from diffusers import AutoencoderKL
    return AutoencoderKL(**VAE_CONFIG)


def write_checkpoint(path: Path, seed: int = 0) -> Path:
    """Write the tiny stand-in checkpoint (random weights from ``seed``)."""
    sd = {}
    with torch.random.fork_rng(devices=[]):  # test-only tiny weights; the global RNG state is restored
        torch.manual_seed(seed)
        for prefix, module in (("first_stage_model.", build_vae()), ("cond_stage_model.", TinyTextEncoder()),
                               ("model.diffusion_model.", TinyDiffusionModel())):
            sd.update({prefix + k: v.contiguous() for k, v in module.state_dict().items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(path), metadata={DOUBLE_TAG: "1", "vae_config": json.dumps(VAE_CONFIG)})
    return path


class CLIP:
    """Mirror of ``comfy.sd.CLIP`` (the parts nodes use)."""

    def __init__(self, encoder: TinyTextEncoder):
        self.cond_stage_model = encoder.eval()
        self.patcher = comfy.model_patcher.ModelPatcher(encoder, mm.text_encoder_device(), mm.unet_offload_device())
        self.layer_idx = None

    def clone(self, disable_dynamic=False):
        c = CLIP(self.cond_stage_model)
        c.layer_idx = self.layer_idx
        return c

    def tokenize(self, text, return_word_ids=False, **kwargs):
        words = re.findall(r"\w+|[^\w\s]", text.lower())
        ids = [zlib.crc32(w.encode()) % (VOCAB - 2) + 2 for w in words]
        chunks = [ids[i:i + CTX - 2] for i in range(0, max(len(ids), 1), CTX - 2)] or [[]]
        out = []
        for c in chunks:
            row = [0, *c, 1] + [1] * (CTX - 2 - len(c))
            out.append([(t, 1.0) for t in row])
        return {"h": out}

    def load_model(self):
        mm.load_models_gpu([self.patcher])
        return self.patcher

    def encode_from_tokens(self, tokens, return_pooled=False, return_dict=False):
        self.load_model()
        ids = torch.tensor([[t for t, _ in chunk] for chunk in tokens["h"]], dtype=torch.long)
        with torch.no_grad():
            h = self.cond_stage_model(ids)
        cond = h.reshape(1, -1, h.shape[-1]).float()
        pooled = h[0:1, -1].float()
        if return_dict:
            return {"cond": cond, "pooled_output": pooled}
        if return_pooled:
            return cond, pooled
        return cond

    def encode_from_tokens_scheduled(self, tokens, unprojected=False, add_dict=None, show_pbar=True):
        if add_dict is None:
            add_dict = {}
        d = self.encode_from_tokens(tokens, return_pooled=True, return_dict=True)
        cond = d.pop("cond")
        d.update(add_dict)
        return [[cond, d]]

    def encode(self, text):
        return self.encode_from_tokens(self.tokenize(text))


class VAE:
    """Mirror of ``comfy.sd.VAE`` for an SD-style ×8 KL autoencoder."""

    def __init__(self, model):
        self.first_stage_model = model.eval()
        self.patcher = comfy.model_patcher.ModelPatcher(model, mm.vae_device(), mm.unet_offload_device())
        self.downscale_ratio = 8
        self.upscale_ratio = 8
        self.latent_channels = 4
        self.output_device = mm.intermediate_device()
        self.vae_dtype = torch.float32
        self.encode_calls = 0
        self.decode_calls = 0

    def spacial_compression_encode(self):
        return self.downscale_ratio

    def spacial_compression_decode(self):
        return self.upscale_ratio

    def vae_encode_crop_pixels(self, pixels):
        h = pixels.shape[1] // 8 * 8
        w = pixels.shape[2] // 8 * 8
        return pixels[:, :h, :w, :]

    def encode(self, pixel_samples):
        self.encode_calls += 1
        mm.load_models_gpu([self.patcher])
        x = self.vae_encode_crop_pixels(pixel_samples[..., :3]).movedim(-1, 1) * 2.0 - 1.0
        with torch.no_grad():
            z = self.first_stage_model.encode(x.to(self.vae_dtype)).latent_dist.mode()
        return z.to(self.output_device).float()

    def decode(self, samples_in, vae_options=None):
        if vae_options is None:
            vae_options = {}
        self.decode_calls += 1
        mm.load_models_gpu([self.patcher])
        with torch.no_grad():
            x = self.first_stage_model.decode(samples_in.to(self.vae_dtype)).sample
        return ((x.float() + 1.0) / 2.0).clamp(0, 1).to(self.output_device).movedim(1, -1)

    def encode_tiled(self, pixel_samples, tile_x=None, tile_y=None, overlap=None, tile_t=None, overlap_t=None):
        return self.encode(pixel_samples)

    def decode_tiled(self, samples, tile_x=None, tile_y=None, overlap=None, tile_t=None, overlap_t=None):
        return self.decode(samples)


def load_checkpoint(path: str):
    sd = load_file(path)
    from safetensors import safe_open
    with safe_open(path, "pt") as f:
        meta = f.metadata() or {}
    if DOUBLE_TAG not in meta:
        raise RuntimeError(f"ERROR: Could not detect model type of: {path} (the test double only loads the tiny "
                           "stand-in checkpoint written by tests/kit/seesr.py)")

    def part(prefix, module):
        module.load_state_dict({k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}, strict=True)
        return module

    vae = part("first_stage_model.", build_vae())
    clip = part("cond_stage_model.", TinyTextEncoder())
    unet = part("model.diffusion_model.", TinyDiffusionModel())
    model = comfy.model_patcher.ModelPatcher(unet, mm.get_torch_device(), mm.unet_offload_device())
    return model, CLIP(clip), VAE(vae)


class CheckpointLoaderSimple(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="CheckpointLoaderSimple", category="loaders",
            description="Loads a diffusion model checkpoint, diffusion models are used to denoise latents.",
            inputs=[io.Combo.Input("ckpt_name", options=folder_paths.get_filename_list("checkpoints"),
                                   tooltip="The name of the checkpoint (model) to load.")],
            outputs=[io.Model.Output(tooltip="The model used for denoising latents."),
                     io.Clip.Output(tooltip="The CLIP model used for encoding text prompts."),
                     io.Vae.Output(tooltip="The VAE model used for encoding and decoding images to and from latent "
                                           "space.")])

    @classmethod
    def execute(cls, ckpt_name):
        path = folder_paths.get_full_path("checkpoints", ckpt_name)
        if path is None:
            raise FileNotFoundError(f"Model in folder 'checkpoints' with filename '{ckpt_name}' not found.")
        return io.NodeOutput(*load_checkpoint(path))


class CLIPTextEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="CLIPTextEncode", category="conditioning",
            inputs=[io.String.Input("text", multiline=True, dynamic_prompts=True, tooltip="The text to be encoded."),
                    io.Clip.Input("clip", tooltip="The CLIP model used for encoding the text.")],
            outputs=[io.Conditioning.Output(tooltip="A conditioning containing the embedded text used to guide the "
                                                    "diffusion model.")])

    @classmethod
    def execute(cls, clip, text):
        if clip is None:
            raise RuntimeError("ERROR: clip input is invalid: None")
        return io.NodeOutput(clip.encode_from_tokens_scheduled(clip.tokenize(text)))


class VAEEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="VAEEncode", category="latent",
                         inputs=[io.Image.Input("pixels"), io.Vae.Input("vae")], outputs=[io.Latent.Output()])

    @classmethod
    def execute(cls, pixels, vae):
        return io.NodeOutput({"samples": vae.encode(pixels[:, :, :, :3])})


class VAEDecode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="VAEDecode", category="latent",
                         inputs=[io.Latent.Input("samples", tooltip="The latent to be decoded."),
                                 io.Vae.Input("vae", tooltip="The VAE model used for decoding the latent.")],
                         outputs=[io.Image.Output(tooltip="The decoded image.")])

    @classmethod
    def execute(cls, samples, vae):
        images = vae.decode(samples["samples"])
        if len(images.shape) == 5:
            images = images.reshape(-1, images.shape[-3], images.shape[-2], images.shape[-1])
        return io.NodeOutput(images)


# comfy/samplers.py (0.33; 0.3.64 lacks the exp_heun_2 pair): KSampler.SAMPLERS / SCHEDULERS
KSAMPLER_NAMES = ["euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2",
                  "exp_heun_2_x0", "exp_heun_2_x0_sde", "dpm_2",
                  "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral",
                  "dpmpp_2s_ancestral_cfg_pp", "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp",
                  "dpmpp_2m_sde", "dpmpp_2m_sde_gpu", "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde",
                  "dpmpp_3m_sde_gpu", "ddpm", "lcm", "ipndm", "ipndm_v", "deis", "res_multistep",
                  "res_multistep_cfg_pp", "res_multistep_ancestral", "res_multistep_ancestral_cfg_pp",
                  "gradient_estimation", "gradient_estimation_cfg_pp", "er_sde", "seeds_2", "seeds_3", "sa_solver",
                  "sa_solver_pece"]
SAMPLER_NAMES = KSAMPLER_NAMES + ["ddim", "uni_pc", "uni_pc_bh2"]
SCHEDULER_NAMES = ["simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal",
                   "linear_quadratic", "kl_optimal"]


class KSampler(io.ComfyNode):
    """Schema of core KSampler (the double has no diffusion sampler: workflows using it are validated here and run
    in a real ComfyUI by tests/test_comfyui_integration.py)."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="KSampler", category="sampling",
            description="Uses the provided model, positive and negative conditioning to denoise the latent image.",
            inputs=[
                io.Model.Input("model", tooltip="The model used for denoising the input latent."),
                io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=True,
                             tooltip="The random seed used for creating the noise."),
                io.Int.Input("steps", default=20, min=1, max=10000,
                             tooltip="The number of steps used in the denoising process."),
                io.Float.Input("cfg", default=8.0, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="The Classifier-Free Guidance scale balances creativity and adherence to the "
                                       "prompt. Higher values result in images more closely matching the prompt "
                                       "however too high values will negatively impact quality."),
                io.Combo.Input("sampler_name", options=SAMPLER_NAMES,
                               tooltip="The algorithm used when sampling, this can affect the quality, speed, and "
                                       "style of the generated output."),
                io.Combo.Input("scheduler", options=SCHEDULER_NAMES,
                               tooltip="The scheduler controls how noise is gradually removed to form the image."),
                io.Conditioning.Input("positive", tooltip="The conditioning describing the attributes you want to "
                                                          "include in the image."),
                io.Conditioning.Input("negative", tooltip="The conditioning describing the attributes you want to "
                                                          "exclude from the image."),
                io.Latent.Input("latent_image", tooltip="The latent image to denoise."),
                io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="The amount of denoising applied, lower values will maintain the structure "
                                       "of the initial image allowing for image to image sampling."),
            ],
            outputs=[io.Latent.Output(tooltip="The denoised latent.")])

    @classmethod
    def execute(cls, model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image,
                denoise=1.0):
        raise NotImplementedError("the ComfyUI test double has no diffusion sampler; run this workflow in a real "
                                  "ComfyUI (tests/test_comfyui_integration.py)")


class VAEDecodeTiled(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VAEDecodeTiled", category="_for_testing",
            inputs=[io.Latent.Input("samples"), io.Vae.Input("vae"),
                    io.Int.Input("tile_size", default=512, min=64, max=4096, step=32),
                    io.Int.Input("overlap", default=64, min=0, max=4096, step=32),
                    io.Int.Input("temporal_size", default=64, min=8, max=4096, step=4,
                                 tooltip="Only used for video VAEs: Amount of frames to decode at a time."),
                    io.Int.Input("temporal_overlap", default=8, min=4, max=4096, step=4,
                                 tooltip="Only used for video VAEs: Amount of frames to overlap.")],
            outputs=[io.Image.Output()])

    @classmethod
    def execute(cls, samples, vae, tile_size=512, overlap=64, temporal_size=64, temporal_overlap=8):
        return io.NodeOutput(vae.decode_tiled(samples["samples"], tile_x=tile_size // 8, tile_y=tile_size // 8,
                                              overlap=overlap // 8))


NODES = [CheckpointLoaderSimple, CLIPTextEncode, VAEEncode, VAEDecode, VAEDecodeTiled, KSampler]
