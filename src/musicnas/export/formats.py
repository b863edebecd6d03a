"""ONNX and TorchScript export of a bundle, each checked by running the exported file against PyTorch.

Without the front end the exported model takes normalised log-mel features ``[B, 1, n_mels, frames]``;
with ``with_frontend=True`` it takes a mono waveform ``[B, samples]`` at the bundle's sample rate and does
LogMel and the bundle's normalisation itself.

ONNX has no complex tensors, so ``torch.stft(..., return_complex=True)`` (what LogMel uses) does not
export. The ONNX front end therefore computes the same STFT as a strided ``conv1d`` with a fixed
windowed DFT basis (cos and sin rows), which every ONNX runtime supports; :class:`DFTLogMel` is tested
equal to LogMel. TorchScript runs torch.stft natively and keeps LogMel as is.
"""

from __future__ import annotations

import copy
import io
import logging
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from musicnas.runtime import MusicnasError, describe_exception
from musicnas.utils.io import atomic_path, atomic_write_bytes, ensure_dir, is_disk_full

log = logging.getLogger(__name__)

FORMATS = ("onnx", "torchscript")
DEFAULT_OPSET = 17
# opsets torch 2.13's exporters know (torch.onnx._constants: ONNX_MIN_OPSET .. ONNX_MAX_OPSET)
ONNX_MIN_OPSET, ONNX_MAX_OPSET = 7, 23
# Logits of float32 models agree to ~1e-5 between runtimes; the front end's DFT-as-conv adds ~1e-4.
DEFAULT_TOLERANCE = 1e-3


class DFTLogMel(nn.Module):
    """LogMel computed with a conv1d DFT (exportable to ONNX): same centred, zero-padded STFT with a
    periodic Hann window, power spectrum, mel filterbank and ``10 * log10(max(S, 1e-10))``."""

    def __init__(self, logmel: nn.Module):
        super().__init__()
        from musicnas.data.features import AMIN

        c = logmel.config
        self.n_fft = c.n_fft
        self.hop_length = c.hop_length
        self.amin = AMIN
        bins = c.n_fft // 2 + 1
        n = torch.arange(c.n_fft, dtype=torch.float64)
        k = torch.arange(bins, dtype=torch.float64).unsqueeze(1)
        angle = 2 * math.pi * k * n / c.n_fft  # [bins, n_fft]
        window = logmel.window.detach().double().cpu()
        basis = torch.cat([torch.cos(angle) * window, -torch.sin(angle) * window])  # [2*bins, n_fft]
        self.register_buffer("dft_basis", basis.float().unsqueeze(1), persistent=False)  # [2*bins, 1, n_fft]
        self.register_buffer("mel_basis", logmel.mel_basis.detach().clone().cpu(), persistent=False)
        self.bins = bins

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        pad = self.n_fft // 2
        x = nn.functional.pad(wave.unsqueeze(1), (pad, pad), mode="constant", value=0.0)  # [B, 1, S + n_fft]
        spec = nn.functional.conv1d(x, self.dft_basis, stride=self.hop_length)  # [B, 2*bins, frames]
        real, imag = spec[:, : self.bins], spec[:, self.bins :]
        power = real * real + imag * imag
        mel = torch.matmul(self.mel_basis, power)
        # log10 written as ln / ln(10): every ONNX opset has Log, not every exporter maps log10
        return (10.0 / math.log(10.0)) * torch.log(torch.clamp(mel, min=self.amin))


class WaveformModel(nn.Module):
    """Waveform [B, samples] -> logits: front end, the bundle's normalisation, then the model."""

    def __init__(self, frontend: nn.Module, mean: torch.Tensor, std: torch.Tensor, model: nn.Module):
        super().__init__()
        self.frontend = frontend
        self.model = model
        self.register_buffer("mean", mean.detach().float().cpu().view(1, 1, -1, 1).clone())
        self.register_buffer("std", std.detach().float().cpu().view(1, 1, -1, 1).clone())

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        feats = self.frontend(wave).unsqueeze(1)
        return self.model((feats - self.mean) / self.std)


@dataclass
class ExportReport:
    path: Path
    format: str
    with_frontend: bool
    input_name: str
    input_shape: list
    max_abs_diff: float
    tolerance: float

    def to_dict(self) -> dict:
        return {
            "path": str(self.path),
            "format": self.format,
            "with_frontend": self.with_frontend,
            "input": {"name": self.input_name, "shape": self.input_shape},
            "max_abs_diff": self.max_abs_diff,
            "tolerance": self.tolerance,
        }


def _cpu_model(classifier) -> nn.Module:
    model = copy.deepcopy(classifier.model).cpu().eval()
    # exporters trace the memory layout too; a plain contiguous layout is the portable one
    return model.to(memory_format=torch.contiguous_format)


def torch_reference(classifier, with_frontend: bool) -> nn.Module:
    """The PyTorch computation the export must reproduce (with the real LogMel)."""
    from musicnas.data.features import LogMel

    model = _cpu_model(classifier)
    if not with_frontend:
        return model
    return WaveformModel(LogMel(classifier.feature_config), classifier.mean, classifier.std, model).eval()


def example_input(classifier, with_frontend: bool, batch: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    c = classifier.feature_config
    if with_frontend:
        # quiet noise with a tone: realistic levels, so the dB values are in the range the model saw
        t = torch.arange(c.clip_samples, dtype=torch.float32) / c.sample_rate
        tone = 0.3 * torch.sin(2 * math.pi * 440.0 * t)
        return tone + 0.05 * torch.randn(batch, c.clip_samples, generator=g)
    return torch.randn(batch, *c.input_shape, generator=g)


def _check(out_path: Path, reference: np.ndarray, got: np.ndarray, tolerance: float, what: str) -> float:
    if got.shape != reference.shape:
        raise MusicnasError(f"exported {what} returns shape {got.shape}, PyTorch {reference.shape}")
    diff = float(np.max(np.abs(got.astype(np.float64) - reference.astype(np.float64))))
    if not math.isfinite(diff) or diff > tolerance:
        raise MusicnasError(
            f"exported {what} {out_path} differs from PyTorch by {diff:.3g} (tolerance {tolerance:g}); "
            "the file was not written. Try the other --format, or report the model's architecture."
        )
    return diff


def write_onnx(
    module: nn.Module,
    inputs: tuple,
    path,
    input_names: list[str],
    output_names: tuple[str, ...] = ("logits",),
    opset: int = DEFAULT_OPSET,
    dynamo: bool = False,
    dynamic_batch: bool = True,
) -> None:
    """The one call of the ONNX exporter: writes ``module(*inputs)`` to ``path`` (not atomically, not
    checked: :func:`export_onnx` does both for bundles; ``musicnas.latency`` exports parts with it).
    ``dynamic_batch`` makes axis 0 of every input and output a dynamic ``batch`` axis."""
    axes = {name: {0: "batch"} for name in (*input_names, *output_names)} if dynamic_batch else None
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # exporter chatter about shape inference, not actionable
            torch.onnx.export(
                module,
                tuple(inputs),
                str(path),
                input_names=list(input_names),
                output_names=list(output_names),
                dynamic_axes=axes,
                opset_version=opset,
                dynamo=dynamo,
            )
    except Exception as exc:  # the exporters raise many types; the user needs the gist, not the stack
        if is_disk_full(exc):
            raise  # atomic_path says what could not be written and removes the partial file
        raise MusicnasError(
            f"ONNX export failed ({describe_exception(exc, 300)}); try --format torchscript"
        ) from exc


def export_onnx(
    classifier,
    out,
    with_frontend: bool = False,
    opset: int | None = None,
    dynamo: bool = False,
    tolerance: float = DEFAULT_TOLERANCE,
) -> ExportReport:
    """Writes an ONNX model with a dynamic batch axis and checks it in onnxruntime against PyTorch.

    ``dynamo=False`` uses the TorchScript-based exporter (opset 17 by default), ``dynamo=True`` the
    torch.export-based one (opset 18 by default: its converter cannot lower Pad to 17)."""
    import onnxruntime as ort

    if opset is None:
        opset = 18 if dynamo else DEFAULT_OPSET

    out = Path(out)
    reference_module = torch_reference(classifier, with_frontend)
    if with_frontend:
        module = WaveformModel(
            DFTLogMel(reference_module.frontend), classifier.mean, classifier.std, reference_module.model
        )
        input_name = "waveform"
    else:
        module = reference_module
        input_name = "features"
    module.eval()
    example = example_input(classifier, with_frontend, batch=2, seed=0)
    probe = example_input(
        classifier, with_frontend, batch=3, seed=1
    )  # another batch size: dynamic axis works
    with atomic_path(out) as tmp:
        write_onnx(module, (example,), tmp, [input_name], opset=opset, dynamo=dynamo)
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        got = session.run(["logits"], {input_name: probe.numpy()})[0]
        with torch.no_grad():
            reference = reference_module(probe).numpy()
        diff = _check(out, reference, got, tolerance, "ONNX model")
    log.debug("ONNX export %s: max abs diff to PyTorch %.3g", out, diff)
    return ExportReport(out, "onnx", with_frontend, input_name, ["batch", *probe.shape[1:]], diff, tolerance)


def export_torchscript(
    classifier, out, with_frontend: bool = False, tolerance: float = DEFAULT_TOLERANCE
) -> ExportReport:
    """Writes a traced TorchScript module and checks a reloaded copy against PyTorch."""
    out = Path(out)
    reference_module = torch_reference(classifier, with_frontend)
    input_name = "waveform" if with_frontend else "features"
    example = example_input(classifier, with_frontend, batch=2, seed=0)
    probe = example_input(classifier, with_frontend, batch=3, seed=1)
    # trace a copy so the reference stays untouched by tracing
    traced_source = copy.deepcopy(reference_module).eval()
    with warnings.catch_warnings():
        # torch 2.13 marks torch.jit deprecated and warns about Python-side shape checks while tracing;
        # the check run below is what tells whether the trace is right
        warnings.simplefilter("ignore")
        try:
            with torch.no_grad():
                traced = torch.jit.trace(traced_source, (example,), check_trace=False)
            # Serialised in memory: torch.jit.save writing to a full disk aborts the process from C++
            # (leaving a 0-byte file); the bytes go to disk through atomic_write_bytes instead.
            buffer = io.BytesIO()
            torch.jit.save(traced, buffer)
        except Exception as exc:
            raise MusicnasError(
                f"TorchScript export failed ({describe_exception(exc, 300)}); try --format onnx"
            ) from exc
        data = buffer.getvalue()
        loaded = torch.jit.load(io.BytesIO(data), map_location="cpu")  # the exact bytes that are written
        with torch.no_grad():
            got = loaded(probe).numpy()
            reference = reference_module(probe).numpy()
        diff = _check(out, reference, got, tolerance, "TorchScript model")
    atomic_write_bytes(out, data)
    log.debug("TorchScript export %s: max abs diff to PyTorch %.3g", out, diff)
    return ExportReport(
        out, "torchscript", with_frontend, input_name, ["batch", *probe.shape[1:]], diff, tolerance
    )


def export_model(classifier, fmt: str, out, with_frontend: bool = False, **kwargs) -> ExportReport:
    """Exports ``classifier`` in ``fmt`` (``onnx`` or ``torchscript``)."""
    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise MusicnasError(f"unknown export format {fmt!r}: use one of {', '.join(FORMATS)}")
    out = Path(out)
    if out.is_dir():
        raise MusicnasError(
            f"--out {out} is a folder; give a file name such as {out / ('model.' + ('onnx' if fmt == 'onnx' else 'pt'))}"
        )
    ensure_dir(out.parent, "export folder")
    if fmt == "onnx":
        return export_onnx(classifier, out, with_frontend, **kwargs)
    return export_torchscript(classifier, out, with_frontend, **kwargs)
