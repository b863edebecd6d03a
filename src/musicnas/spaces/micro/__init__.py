"""The ENAS micro (cell) search space: ``Space``, ``Arch``, ``SearchNet``, ``FixedNet``, ``extract_subnet``
(see docs/architecture.md, Space contract)."""

from musicnas.spaces.micro.arch import OPS, MicroArch, MicroSpace
from musicnas.spaces.micro.extract import ExtractedMicroNet, extract_subnet
from musicnas.spaces.micro.fixed_net import FixedMicroNet
from musicnas.spaces.micro.search_net import MicroSearchNet

Space = MicroSpace
Arch = MicroArch
SearchNet = MicroSearchNet
FixedNet = FixedMicroNet

__all__ = [
    "OPS",
    "Arch",
    "ExtractedMicroNet",
    "FixedMicroNet",
    "FixedNet",
    "MicroArch",
    "MicroSearchNet",
    "MicroSpace",
    "SearchNet",
    "Space",
    "extract_subnet",
]
