"""Why a ``torch.load`` failed, in words that never pass on torch's unsafe advice."""

from __future__ import annotations

import re

from vemrestore.io._common import first_sentence

__all__ = ["torch_load_reason"]


def torch_load_reason(error: BaseException) -> str:
    """Why ``torch.load(..., weights_only=True)`` failed, in a few words and without torch's
    advice (which may suggest ``weights_only=False``, i.e. running code from the file).

    Examples
    --------
    >>> torch_load_reason(EOFError())
    'the file ends early (EOFError)'
    """
    text = str(error)
    _, marker, detail = text.partition("WeightsUnpickler error:")
    if marker:
        reason = f"not a plain state dict: {first_sentence(detail)}"
    elif isinstance(error, EOFError):
        reason = "the file ends early"
    else:
        reason = first_sentence(text) or "unreadable"
    reason = re.sub(r"\x1b\[[0-9;]*m", "", reason)[:160]
    if "weights_only" in reason or "safe_globals" in reason:
        reason = "not a plain state dict"
    return f"{reason} ({type(error).__name__})"
