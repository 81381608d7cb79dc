"""Loss terms read back from the device in one copy, every `log_every` steps.

The training loops keep each step's loss terms as 0-d tensors on the device; reading one
(`float(t)`) makes the host wait for the GPU to finish the step, which leaves it idle while
the host prepares the next one. `host_floats` turns a list of such steps into floats with one
stack and one device→host copy. On CPU the values are those `float(t)` gives, bit for bit.

    from s2f.train.readback import host_floats
"""

from __future__ import annotations

import torch

Terms = dict[str, torch.Tensor | float]  # a step's loss terms, tensors still on the device


def host_floats(pending: list[Terms]) -> list[dict[str, float]]:
    """Every step's terms as floats, keys in their order (floats pass through)."""
    if not pending:
        return []
    keys = [k for k, v in pending[0].items() if isinstance(v, torch.Tensor)]
    rows = (torch.stack([torch.stack([t[k] for k in keys])  # type: ignore[misc]
                         for t in pending]).tolist() if keys else [[] for _ in pending])
    out = []
    for t, row in zip(pending, rows, strict=True):
        got = dict(zip(keys, row, strict=True))
        out.append({k: got[k] if k in got else float(v) for k, v in t.items()})
    return out
