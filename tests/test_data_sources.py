"""Audio folders and CSV manifests: what is found, and the hard errors for unusable input."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from musicnas.data.sources import find_audio
from musicnas.runtime import MusicnasError


def touch_audio(path, seconds=0.2):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.full(int(16000 * seconds), 0.1, np.float32), 16000)
    return path


def test_folder_layout_nested_files_and_ignored_entries(tmp_path, caplog):
    touch_audio(tmp_path / "blues" / "blues.00000.wav")
    touch_audio(tmp_path / "blues" / "live" / "deep" / "b.flac")
    touch_audio(tmp_path / "jazz" / "jazz.00000.wav")
    (tmp_path / "jazz" / "notes.txt").write_text("not audio: ignored by extension")
    touch_audio(tmp_path / ".hidden" / "x.wav")
    touch_audio(tmp_path / "loose.wav")
    source = find_audio(tmp_path)
    assert source.kind == "folder" and source.classes == ["blues", "jazz"]
    assert sorted(f.group for f in source.files) == [
        "blues/blues.00000.wav",
        "blues/live/deep/b.flac",
        "jazz/jazz.00000.wav",
    ]
    assert all(f.split is None for f in source.files)
    assert "loose.wav" in caplog.text


def test_folder_errors(tmp_path):
    with pytest.raises(MusicnasError, match="does not exist"):
        find_audio(tmp_path / "nope")
    touch_audio(tmp_path / "only" / "a.wav")
    with pytest.raises(MusicnasError, match="at least 2"):
        find_audio(tmp_path)
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(MusicnasError, match="empty_class holds no audio files"):
        find_audio(tmp_path)


def test_manifest_relative_paths_group_and_aliases(tmp_path):
    audio = tmp_path / "audio"
    for i in range(4):
        touch_audio(audio / f"r{i}.wav")
    (tmp_path / "lists").mkdir()
    manifest = tmp_path / "lists" / "m.csv"
    manifest.write_text(
        "Path,Label,Split,Group\n"
        "../audio/r0.wav,rock,Validation,alb1\n"
        "../audio/r1.wav,rock,,alb1\n"
        "../audio/r2.wav,jazz,train,\n"
        "../audio/r2.wav,jazz,train,\n"  # listed twice identically (e.g. once per clip): fine
        f"{audio / 'r3.wav'},jazz,test,alb3\n"
    )
    source = find_audio(manifest)
    files = {f.path.rsplit("/", 1)[1]: f for f in source.files}
    assert source.kind == "manifest" and len(source.files) == 4
    assert files["r0.wav"].split == "val" and files["r1.wav"].split is None
    assert files["r0.wav"].group == files["r1.wav"].group == "alb1"
    assert files["r2.wav"].group.endswith("r2.wav")  # default group: the file
    assert files["r3.wav"].path == str(audio / "r3.wav")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("file,label\na.wav,x\n", "lacks column.*path"),
        ("path,genre\na.wav,x\n", "lacks column.*label"),
        ("path,label\n", "no rows"),
        ("path,label\nmissing1.wav,x\nmissing2.wav,y\n", "2 path.*do not exist"),
        ("path,label,split\na.wav,x,holdout\n", "not one of train, val, test"),
        ("path,label\na.wav,\n", "empty label"),
        ("path,label\na.wav,x\na.wav,y\n", "listed again with a different label"),
        ("path,label\na.wav,x\n", "at least 2"),
    ],
)
def test_manifest_errors(tmp_path, text, message):
    touch_audio(tmp_path / "a.wav")
    manifest = tmp_path / "m.csv"
    manifest.write_text(text)
    with pytest.raises(MusicnasError, match=message):
        find_audio(manifest)


def test_non_csv_file_is_refused(tmp_path):
    path = touch_audio(tmp_path / "a.wav")
    with pytest.raises(MusicnasError, match="not a .csv manifest"):
        find_audio(path)


def test_fingerprint_follows_content_and_labels(tmp_path):
    touch_audio(tmp_path / "a" / "1.wav")
    touch_audio(tmp_path / "b" / "2.wav")
    first = find_audio(tmp_path).fingerprint()
    assert find_audio(tmp_path).fingerprint() == first
    touch_audio(tmp_path / "b" / "2.wav", seconds=0.3)  # new size and mtime
    assert find_audio(tmp_path).fingerprint() != first
