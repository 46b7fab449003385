"""A plain-PyTorch MAE training step, the reference for jssl's ViT step time (MAE presets).

The same step as `configs/mae.py:cifar10` (or any MAE config, from its sizes): a ViT encoder
(patch embedding as a p x p / stride p conv, fixed 2-D sin-cos position embeddings, a CLS
token with a zero position embedding, pre-norm blocks: LayerNorm eps 1e-6 -> fused-qkv
multi-head attention (torch's scaled_dot_product_attention) -> residual, LayerNorm -> MLP
(ratio 4, exact GELU) -> residual, a final LayerNorm) on the visible 1 - mask_ratio of the
patches (a per-sample random shuffle), the MAE decoder (Linear to the decoder width, mask tokens
unshuffled into place, sin-cos positions, decoder blocks, LayerNorm, Linear to p*p*3 pixels) and
the per-patch normalized pixel loss on the masked patches; AdamW (b2 0.95, wd 0.05) as
configs/mae.py. float32 on the CPU; `amp=True` runs the forward in bfloat16 autocast (the GPU
reference).

torch is a benchmark-only dependency: jssl never imports it. Run as a script it prints one
JSON line, with the process's peak RSS (`peak_rss_mb`).

    python benchmarks/torch_reference_vit.py --batch_size 512 --steps 3 --warmup 1
"""

import argparse
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

if os.path.dirname(os.path.abspath(__file__)) not in sys.path:  # loaded by path (jssl.bench)
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_reference  # pylint: disable=g-import-not-at-top,wrong-import-position


def sincos_2d(dim: int, grid: int) -> torch.Tensor:
  """[grid * grid, dim] fixed 2-D sin-cos position embeddings: the first half encodes the
  column, the second the row (jssl's and MAE's layout), rows in row-major patch order."""
  def one_d(d, pos):
    omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
    out = np.einsum('m,d->md', pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)
  gy, gx = np.meshgrid(np.arange(grid, dtype=np.float64), np.arange(grid, dtype=np.float64),
                       indexing='ij')
  emb = np.concatenate([one_d(dim // 2, gx), one_d(dim // 2, gy)], axis=1)
  return torch.from_numpy(emb.astype(np.float32))


class Block(nn.Module):
  """Pre-norm transformer block with a fused qkv projection."""

  def __init__(self, dim, heads, mlp_ratio=4.0):
    super().__init__()
    self.heads = heads
    self.norm1 = nn.LayerNorm(dim, eps=1e-6)
    self.qkv = nn.Linear(dim, 3 * dim)
    self.proj = nn.Linear(dim, dim)
    self.norm2 = nn.LayerNorm(dim, eps=1e-6)
    self.fc1 = nn.Linear(dim, int(dim * mlp_ratio))
    self.fc2 = nn.Linear(int(dim * mlp_ratio), dim)

  def forward(self, x):
    n, t, d = x.shape
    qkv = self.qkv(self.norm1(x)).reshape(n, t, 3, self.heads, d // self.heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)  # [N, H, T, D/H] each
    y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, t, d)
    x = x + self.proj(y)
    return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class MAE(nn.Module):
  """Encoder on the visible patches + decoder over all of them; `forward` returns the loss."""

  def __init__(self, image_size=32, patch=4, width=192, depth=12, heads=3, dec_width=256,
               dec_depth=4, dec_heads=8, mask_ratio=0.75, norm_pix_loss=True):
    super().__init__()
    self.patch, self.mask_ratio, self.norm_pix_loss = patch, mask_ratio, norm_pix_loss
    grid = image_size // patch
    self.patch_embed = nn.Conv2d(3, width, patch, patch)
    self.cls = nn.Parameter(torch.randn(1, 1, width) * 0.02)
    self.register_buffer('pos', sincos_2d(width, grid)[None])
    self.blocks = nn.ModuleList(Block(width, heads) for _ in range(depth))
    self.norm = nn.LayerNorm(width, eps=1e-6)
    self.dec_embed = nn.Linear(width, dec_width)
    self.mask_token = nn.Parameter(torch.randn(1, 1, dec_width) * 0.02)
    self.register_buffer('dec_pos', sincos_2d(dec_width, grid)[None])
    self.dec_blocks = nn.ModuleList(Block(dec_width, dec_heads) for _ in range(dec_depth))
    self.dec_norm = nn.LayerNorm(dec_width, eps=1e-6)
    self.dec_pred = nn.Linear(dec_width, patch * patch * 3)

  def patchify(self, images):
    n, c, h, w = images.shape
    p = self.patch
    x = images.reshape(n, c, h // p, p, w // p, p)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(n, (h // p) * (w // p), p * p * c)

  def forward(self, images):
    n = images.shape[0]
    x = self.patch_embed(images).flatten(2).transpose(1, 2) + self.pos  # [N, L, D]
    length = x.shape[1]
    keep = int(length * (1 - self.mask_ratio) + 1e-6)
    ids_shuffle = torch.argsort(torch.rand(n, length, device=x.device), dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :keep]
    x = torch.gather(x, 1, ids_keep[..., None].expand(-1, -1, x.shape[-1]))
    x = torch.cat([self.cls.expand(n, -1, -1), x], dim=1)
    for block in self.blocks:
      x = block(x)
    x = self.dec_embed(self.norm(x))
    tokens = torch.cat([x[:, 1:], self.mask_token.expand(n, length - keep, -1)], dim=1)
    tokens = torch.gather(tokens, 1, ids_restore[..., None].expand(-1, -1, x.shape[-1]))
    x = torch.cat([x[:, :1], tokens + self.dec_pos], dim=1)
    for block in self.dec_blocks:
      x = block(x)
    pred = self.dec_pred(self.dec_norm(x))[:, 1:].float()
    target = self.patchify(images).float()
    if self.norm_pix_loss:
      mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
      target = (target - mean) / (var + 1e-6) ** 0.5
    mask = (ids_restore >= keep).float()
    return (((pred - target) ** 2).mean(-1) * mask).sum() / mask.sum()


def make_optimizer(model, lr, weight_decay=0.05):
  """AdamW (0.9, 0.95), weight decay on weights only (not biases, norms, tokens)."""
  decay, plain = [], []
  for name, p in model.named_parameters():
    (plain if p.ndim < 2 or name in ('cls', 'mask_token') else decay).append(p)
  return torch.optim.AdamW([{'params': decay, 'weight_decay': weight_decay},
                            {'params': plain, 'weight_decay': 0.0}], lr=lr, betas=(0.9, 0.95))


def time_step(batch_size=512, image_size=32, patch=4, width=192, depth=12, heads=3,
              dec_width=256, dec_depth=4, dec_heads=8, mask_ratio=0.75, norm_pix_loss=True,
              steps=3, warmup=1, amp=False, seed=0) -> dict:
  """Mean wall time of one MAE training step on a batch of random images (CPU/GPU)."""
  torch.manual_seed(seed)
  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  model = MAE(image_size, patch, width, depth, heads, dec_width, dec_depth, dec_heads,
              mask_ratio, norm_pix_loss).to(device)
  opt = make_optimizer(model, lr=1.5e-4 * batch_size / 256)
  images = torch.rand(batch_size, 3, image_size, image_size, device=device)

  def step():
    with torch.autocast(device, dtype=torch.bfloat16, enabled=amp):
      loss = model(images)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss

  model.train()
  step_s, loss = torch_reference.seconds_per_step(step, steps, warmup, device)
  return dict(step_ms=1000 * step_s, images_per_s=batch_size / step_s, loss=loss,
              batch_size=batch_size, image_size=image_size, patch=patch, width=width,
              depth=depth, amp=amp, device=device, torch_version=torch.__version__,
              threads=torch.get_num_threads(), finite=math.isfinite(loss))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  for name, default in (('batch_size', 512), ('image_size', 32), ('patch', 4), ('width', 192),
                        ('depth', 12), ('heads', 3), ('dec_width', 256), ('dec_depth', 4),
                        ('dec_heads', 8), ('steps', 3), ('warmup', 1)):
    parser.add_argument(f'--{name}', type=int, default=default)
  parser.add_argument('--mask_ratio', type=float, default=0.75)
  parser.add_argument('--norm_pix_loss', type=int, choices=(0, 1), default=1)
  parser.add_argument('--amp', action='store_true')
  args = vars(parser.parse_args())
  args['norm_pix_loss'] = bool(args['norm_pix_loss'])
  out = time_step(**args)
  print(json.dumps({**out, 'peak_rss_mb': torch_reference.peak_rss_mb()}))


if __name__ == '__main__':
  main()
