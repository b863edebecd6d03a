"""Fuzzing the inputs a user can hand musicnas: audio files, CSV manifests, bundle.json / arch.json,
search config.json / train_config.json and checkpoints, as random bytes and as mutations of valid files.

Every call must end in a result, a :class:`MusicnasError` or (for audio) an :class:`AudioSkip` (the
logged skip of prepare and predict); any other exception is a bug. Cases come from a seeded loop, so a
failure names its case and reruns exactly: ``FUZZ_CASES`` per target in the default run (a few seconds),
2,000 per target under ``-m slow``.
"""

from __future__ import annotations

import copy
import json
import random
import shutil
import traceback

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import reseal_bundle
from musicnas.data.audio import AUDIO_EXTENSIONS, AudioSkip, iter_clips, load_audio
from musicnas.data.features import FeatureConfig
from musicnas.data.sources import find_audio
from musicnas.export.bundle import read_bundle, save_bundle
from musicnas.models import ModelSpec, build_model
from musicnas.runtime import MusicnasError
from musicnas.search.config import SearchConfig
from musicnas.search.enas import CONFIG_FORMAT, load_run_config
from musicnas.spaces.macro import MacroSpace
from musicnas.utils.io import load_checkpoint, save_checkpoint

FUZZ_CASES = 40
CASES = [pytest.param(FUZZ_CASES, id="quick"), pytest.param(2000, marks=pytest.mark.slow, id="slow")]
pytestmark = pytest.mark.usefixtures("one_torch_thread")

INTERESTING_INTS = [0, 1, -1, 2, 3, 7, 64, 255, 2**16, 2**31 - 1, 2**32, 10**9, -(10**9), 2**63]
INTERESTING_VALUES = [
    None,
    True,
    False,
    0.5,
    -0.0,
    1e308,
    -1e308,
    "",
    "x",
    "macro",
    "..",
    [],
    [1, 2],
    {},
    {"a": 1},
]


def _interesting(rng: random.Random):
    return (
        rng.choice(INTERESTING_INTS) if rng.random() < 0.6 else copy.deepcopy(rng.choice(INTERESTING_VALUES))
    )


# ----------------------------------------------------------------------------------- mutators
def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    """One of: random bytes, flipped bytes, truncation, a clobbered header, an inserted or duplicated
    chunk, a 4-byte field set to an extreme integer."""
    b = bytearray(data)
    op = rng.randrange(7)
    if op == 0 or not b:
        return rng.randbytes(rng.randrange(0, 4096))
    if op == 1:
        for _ in range(rng.randint(1, 16)):
            b[rng.randrange(len(b))] = rng.randrange(256)
    elif op == 2:
        del b[rng.randrange(len(b)) :]
    elif op == 3:
        n = min(len(b), rng.randint(1, 64))
        b[:n] = rng.randbytes(n)
    elif op == 4:
        at = rng.randrange(len(b))
        b[at:at] = rng.randbytes(rng.randint(1, 512))
    elif op == 5:
        start = rng.randrange(len(b))
        b[start:start] = b[start : start + rng.randint(1, 2048)]
    else:
        at = rng.randrange(min(len(b), 128))
        value = rng.choice([0, 1, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 2**24]) & 0xFFFFFFFF
        b[at : at + 4] = value.to_bytes(4, rng.choice(["little", "big"]))
    return bytes(b)


def _json_slots(obj, out=None):
    """Every (container, key) in a JSON value, so one place can be changed."""
    out = [] if out is None else out
    if isinstance(obj, dict):
        for k in obj:
            out.append((obj, k))
            _json_slots(obj[k], out)
    elif isinstance(obj, list):
        for i in range(len(obj)):
            out.append((obj, i))
            _json_slots(obj[i], out)
    return out


def mutate_json(obj, rng: random.Random):
    """A structure-aware edit of a JSON value (or, sometimes, of its text)."""
    obj = copy.deepcopy(obj)
    for _ in range(rng.randint(1, 3)):
        slots = _json_slots(obj)
        if not slots:
            return _interesting(rng)
        container, key = rng.choice(slots)
        op = rng.randrange(5)
        if op == 0:
            container[key] = _interesting(rng)
        elif op == 1:
            del container[key]
        elif op == 2 and isinstance(container[key], (int, float)) and not isinstance(container[key], bool):
            container[key] = container[key] * rng.choice([-1, 0, 2, 1000, 1e9]) + rng.choice([0, 1, 0.5])
        elif op == 3 and isinstance(container[key], list):
            rng.shuffle(container[key])
        elif isinstance(container, dict):
            container[rng.choice(["extra", "type", "channels", key + "_"])] = _interesting(rng)
    return obj


def json_bytes(obj, rng: random.Random) -> bytes:
    if rng.random() < 0.15:  # text-level damage: cut, flipped, or not JSON at all
        return mutate_bytes(json.dumps(obj).encode(), rng)
    return json.dumps(mutate_json(obj, rng)).encode()


def _run_case(name: str, case: int, call) -> None:
    try:
        call()
    except (MusicnasError, AudioSkip):
        pass
    except Exception:
        pytest.fail(f"{name} case {case}: {traceback.format_exc()}")


# ---------------------------------------------------------------------------------------- audio
@pytest.fixture(scope="module")
def audio_seeds(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz_audio")
    t = np.arange(int(1.5 * 16000)) / 16000
    mono = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    stereo = np.stack([mono, np.roll(mono, 100)], axis=1)
    seeds = {}
    for name, wave, kw in [
        ("pcm.wav", mono, {"subtype": "PCM_16"}),
        ("float.wav", stereo, {"subtype": "FLOAT"}),
        ("a.flac", mono, {}),
        ("a.ogg", mono, {"format": "OGG", "subtype": "VORBIS"}),
        ("a.mp3", stereo, {"format": "MP3"}),
        ("a.au", mono, {}),
    ]:
        sf.write(folder / name, wave, 16000, **kw)
        seeds[name] = (folder / name).read_bytes()
    return seeds


@pytest.mark.parametrize("cases", CASES)
def test_fuzz_audio_decoder(audio_seeds, tmp_path, cases):
    config = FeatureConfig(clip_seconds=1.0, clip_hop_seconds=0.5, min_seconds=0.2)
    names = sorted(audio_seeds)
    for case in range(cases):
        rng = random.Random(f"audio-{case}")
        seed_name = rng.choice(names)
        suffix = (
            seed_name[seed_name.index(".") :] if rng.random() < 0.8 else rng.choice(sorted(AUDIO_EXTENSIONS))
        )
        path = tmp_path / f"case{case % 8}{suffix}"
        path.write_bytes(mutate_bytes(audio_seeds[seed_name], rng))

        def decode(path=path):
            clips = list(iter_clips(path, config.clip_samples, config.hop_samples, config.min_samples, 16000))
            assert all(c.shape == (config.clip_samples,) and np.all(np.isfinite(c)) for _, c in clips)

        _run_case(f"iter_clips({seed_name} -> {suffix})", case, decode)
        _run_case(f"load_audio({seed_name} -> {suffix})", case, lambda path=path: load_audio(path, 16000))
        path.unlink()


# ------------------------------------------------------------------------------------- manifests
@pytest.mark.parametrize("cases", CASES)
def test_fuzz_manifest(tmp_path, cases):
    for i in range(4):
        sf.write(tmp_path / f"f{i}.wav", np.full(1600, 0.1, np.float32), 16000)
    valid = "path,label,split,group\nf0.wav,a,train,g0\nf1.wav,a,,g1\nf2.wav,b,test,\nf3.wav,b,val,g3\n"
    manifest = tmp_path / "m.csv"
    for case in range(cases):
        rng = random.Random(f"manifest-{case}")
        if rng.random() < 0.5:
            data = mutate_bytes(valid.encode(), rng)
        else:  # line- and cell-level edits of the text
            rows = [line.split(",") for line in valid.splitlines()]
            for _ in range(rng.randint(1, 4)):
                row = rng.choice(rows)
                if row:
                    row[rng.randrange(len(row))] = rng.choice(["", "\0", '"', "../f0.wav", "f9.wav", "TRAIN", "x" * 300, "é", "a", ",,"])  # fmt: skip
            if rng.random() < 0.3:
                rows.append(rng.choice(rows))
            data = "\n".join(",".join(r) for r in rows).encode(
                rng.choice(["utf-8", "utf-16", "latin-1"]), "replace"
            )
        manifest.write_bytes(data)
        _run_case("find_audio(manifest)", case, lambda: find_audio(manifest))


# ------------------------------------------------------------------------------ bundle.json / arch.json
@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    arch = MacroSpace(num_layers=2, num_branches=6, channels=4).sample(1)
    torch.manual_seed(0)
    spec = ModelSpec.for_arch(arch, in_channels=1, num_classes=2, channels=4, dropout=0.1)
    cfg = FeatureConfig(n_mels=16, n_fft=256, hop_length=128)
    out = tmp_path_factory.mktemp("fuzz_bundle") / "model"
    save_bundle(out, build_model(spec, arch).eval(), arch, cfg, ["a", "b"], np.zeros(16), np.ones(16), {}, model_spec=spec)  # fmt: skip
    return out


@pytest.mark.parametrize("cases", CASES)
def test_fuzz_bundle_json_and_arch_json(bundle_dir, tmp_path, cases):
    originals = {name: json.loads((bundle_dir / name).read_text()) for name in ("bundle.json", "arch.json")}
    for case in range(cases):
        rng = random.Random(f"bundle-{case}")
        target = tmp_path / f"b{case}"
        shutil.copytree(bundle_dir, target)
        name = rng.choice(sorted(originals))
        (target / name).write_bytes(json_bytes(originals[name], rng))
        if rng.random() < 0.5:
            reseal_bundle(target)  # also reach the checks below the digests
        _run_case(f"read_bundle({name})", case, lambda target=target: read_bundle(target))
        shutil.rmtree(target)


# ------------------------------------------------------------------- config.json / train_config.json
@pytest.mark.parametrize("cases", CASES)
def test_fuzz_run_configs(tmp_path, cases):
    from musicnas.cli.train import read_train_record
    from musicnas.training.trainer import TrainConfig

    search_record = {"format": CONFIG_FORMAT, "version": 1, "search": SearchConfig().to_dict(),
                     "space": {"type": "macro"}, "data": {"classes": ["a", "b"]}}  # fmt: skip
    train_record = {"config": TrainConfig().to_dict(), "seed": 0, "data": "cache",
                    "model": {"type": "macro", "channels": 4, "dropout": 0.1, "kwargs": {}}}  # fmt: skip
    for case in range(cases):
        rng = random.Random(f"config-{case}")
        (tmp_path / "config.json").write_bytes(json_bytes(search_record, rng))
        _run_case("load_run_config", case, lambda: load_run_config(tmp_path).validate())
        (tmp_path / "train_config.json").write_bytes(json_bytes(train_record, rng))
        _run_case("read_train_record", case, lambda: read_train_record(tmp_path / "train_config.json"))


# ------------------------------------------------------------------------------------ checkpoints
@pytest.mark.parametrize("cases", CASES)
def test_fuzz_checkpoints(tmp_path, cases):
    valid = tmp_path / "valid.pt"
    save_checkpoint(valid, {"version": 1, "epoch": 3, "model": {"w": torch.randn(4, 3)},
                            "rng": torch.Generator().get_state(), "history": [{"loss": 0.5}]})  # fmt: skip
    data = valid.read_bytes()
    path = tmp_path / "last.pt"
    for case in range(cases):
        rng = random.Random(f"checkpoint-{case}")
        path.write_bytes(mutate_bytes(data, rng))
        _run_case("load_checkpoint", case, lambda: load_checkpoint(path))
