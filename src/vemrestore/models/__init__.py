"""Network building blocks and networks (pure ``torch.nn``; no I/O, no training loops)."""

from vemrestore.models.unet2d import UNet2D, pad_to_multiple

__all__ = ["UNet2D", "pad_to_multiple"]
