"""The checkpoint every stored version holds beside its exported files: the trained weights as
safetensors (no pickle) and the network's config (its `config` dataclass) as JSON, so that any format
can be re-exported from a stored version without retraining (`entry.build(config)` rebuilds it)."""

from __future__ import annotations

import json
from dataclasses import asdict, is_dataclass
from pathlib import Path

from torch import nn

from models.registry import CONFIG_FILE, WEIGHTS_FILE


def write_checkpoint(model: nn.Module, out_dir: Path) -> tuple[Path, ...]:
    """The trained weights as safetensors and the network's config (its `config` dataclass) as JSON."""
    from safetensors.torch import save_file

    weights, config = out_dir / WEIGHTS_FILE, out_dir / CONFIG_FILE
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(weights), metadata={"format": "pt"})
    settings = getattr(model, "config", None)
    config.write_text(json.dumps(asdict(settings) if is_dataclass(settings) else {}, indent=2))
    return weights, config


def load_checkpoint(entry, folder: Path) -> nn.Module:
    """The network of a stored version, rebuilt from its config with its trained weights, in eval mode."""
    from safetensors.torch import load_file

    model = entry.build(json.loads((folder / CONFIG_FILE).read_text()))
    model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)), strict=True)
    return model.eval()
