"""A hand-designed music CNN: the short-chunk CNN with residual blocks of Won et al. (2020).

Won, Ferraro, Bogdanov, Serra, "Evaluation of CNN-based automatic music tagging models" (SMC 2020):
seven residual 2-D blocks, each halving both axes, widths ``[C, C, 2C, 2C, 2C, 2C, 4C]`` (C = 128 in
the paper), a global max pool, then dense -> BN -> ReLU -> dropout(0.5) -> dense. It was the strongest
model on short chunks in that study, which makes it the natural "what an expert would have picked"
baseline for a search to beat.

Adapted to musicnas inputs (log-mel ``[B, 1, n_mels, frames]``, already normalised by the cache):
- the network does not compute its own spectrogram; the input BatchNorm of the paper is kept;
- any input size works: a stride-2 block on a 1-pixel axis keeps it at 1, and the final pool takes the
  maximum over what is left of frequency *and* time (the paper squeezed a frequency axis that its 128
  mels had reduced to exactly 1);
- the output is class logits for single-label softmax classification (the paper's sigmoid was for
  multi-label tagging);
- ``channels`` and ``num_blocks`` are options so CPU budgets can use a narrower network; the defaults are
  the paper's.
It exposes the same training interface as the searched fixed networks (``forward_train``,
``aux_weight``, ``set_progress``), so the one trainer trains both.
"""

from __future__ import annotations

import torch
from torch import nn

from musicnas.models import ModelSpec, register_model_type
from musicnas.runtime import MusicnasError

MODEL_TYPE = "short_chunk_res_cnn"


class ResBlock2d(nn.Module):
    """conv3x3(stride) -> BN -> ReLU -> conv3x3 -> BN, plus a conv3x3(stride) -> BN shortcut when the
    shape changes, then ReLU (the paper's ``Res_2d``)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 2):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1),
                nn.BatchNorm2d(out_channels),
            )
        else:
            self.shortcut = nn.Identity()
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(out + self.shortcut(x))


def block_widths(channels: int, num_blocks: int) -> list[int]:
    """The paper's width schedule ``[C, C, 2C, 2C, 2C, 2C, 4C]``, stretched or cut to ``num_blocks``:
    the first two blocks at C, the last at 4C, the ones between at 2C."""
    if num_blocks < 1:
        raise MusicnasError(f"num_blocks must be at least 1 (got {num_blocks})")
    widths = []
    for i in range(num_blocks):
        if i == num_blocks - 1 and num_blocks >= 3:
            widths.append(4 * channels)
        elif i < 2:
            widths.append(channels)
        else:
            widths.append(2 * channels)
    return widths


class ShortChunkResCNN(nn.Module):
    """Won et al.'s short-chunk residual CNN for ``[B, in_channels, n_mels, frames]`` log-mel input."""

    model_type = MODEL_TYPE
    aux_weight = 0.0  # no auxiliary head; the attribute is part of the trainer interface

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        channels: int = 128,
        num_blocks: int = 7,
        dropout: float = 0.5,
    ):
        super().__init__()
        if channels < 1:
            raise MusicnasError(f"channels must be at least 1 (got {channels})")
        if num_classes < 2:
            raise MusicnasError(f"num_classes must be at least 2 (got {num_classes})")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.channels = channels
        self.num_blocks = num_blocks
        self.dropout_p = dropout
        self.input_bn = nn.BatchNorm2d(in_channels)
        widths = block_widths(channels, num_blocks)
        blocks = []
        prev = in_channels
        for w in widths:
            blocks.append(ResBlock2d(prev, w, stride=2))
            prev = w
        self.blocks = nn.Sequential(*blocks)
        self.dense1 = nn.Linear(prev, prev)
        self.bn = nn.BatchNorm1d(prev)
        self.dropout = nn.Dropout(dropout)
        self.dense2 = nn.Linear(prev, num_classes)

    def config(self) -> dict:
        """Everything needed to rebuild the network (stored in model bundles)."""
        return {
            "type": MODEL_TYPE,
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "channels": self.channels,
            "num_blocks": self.num_blocks,
            "dropout": self.dropout_p,
        }

    @classmethod
    def from_config(cls, cfg: dict) -> ShortChunkResCNN:
        kwargs = {
            k: cfg[k] for k in ("in_channels", "num_classes", "channels", "num_blocks", "dropout") if k in cfg
        }
        return cls(**kwargs)

    def model_spec(self) -> ModelSpec:
        """How a model bundle rebuilds this network (``save_bundle(..., model_spec=...)``)."""
        return ModelSpec.for_type(
            MODEL_TYPE,
            in_channels=self.in_channels,
            num_classes=self.num_classes,
            channels=self.channels,
            dropout=self.dropout_p,
            num_blocks=self.num_blocks,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise MusicnasError(f"expected input [batch, channels, mels, frames], got shape {tuple(x.shape)}")
        h = self.blocks(self.input_bn(x))
        h = torch.amax(h, dim=(2, 3))  # global max pool over frequency and time
        h = self.dropout(torch.relu(self.bn(self.dense1(h))))
        return self.dense2(h)

    def forward_train(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.forward(x), None

    def set_progress(self, progress: float) -> None:
        """No drop-path schedule in this network."""


@register_model_type(MODEL_TYPE)
def build_short_chunk_res_cnn(
    arch, in_channels: int, num_classes: int, channels=None, dropout: float = 0.5, **kwargs
):
    """Bundle builder: the CNN has no searched architecture, so ``arch`` must be None."""
    if arch is not None:
        raise MusicnasError(f"model type {MODEL_TYPE!r} takes no architecture, but the bundle has one")
    return ShortChunkResCNN(
        in_channels=in_channels,
        num_classes=num_classes,
        channels=128 if channels is None else int(channels),
        num_blocks=int(kwargs.pop("num_blocks", 7)),
        dropout=dropout,
        **kwargs,
    )
