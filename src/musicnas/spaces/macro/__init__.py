"""The ENAS macro search space (enas-reference.md §1): one op and a set of skips per layer."""

from musicnas.spaces.macro.arch import MacroArch, MacroSpace
from musicnas.spaces.macro.extract import ExtractedMacroNet, extract_subnet
from musicnas.spaces.macro.fixed_net import FixedMacroNet
from musicnas.spaces.macro.search_net import MacroSearchNet

Space = MacroSpace
Arch = MacroArch
SearchNet = MacroSearchNet
FixedNet = FixedMacroNet

__all__ = [
    "Arch",
    "ExtractedMacroNet",
    "FixedMacroNet",
    "FixedNet",
    "MacroArch",
    "MacroSearchNet",
    "MacroSpace",
    "SearchNet",
    "Space",
    "extract_subnet",
]
