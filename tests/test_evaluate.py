"""Clip/track metrics on constructed examples."""

from __future__ import annotations

import numpy as np
import pytest

from musicnas.runtime import MusicnasError
from musicnas.training.evaluate import (
    aggregate_tracks,
    compute_metrics,
    file_ids_of,
    label_map_for,
    plot_confusion,
)


def test_track_aggregation_averages_clip_logits_per_track():
    # track 7: two clips lean to class 1 weakly, one strongly to class 0 -> mean favours class 0
    logits = np.array(
        [
            [0.0, 1.0],  # track 7, label 0
            [0.0, 1.0],  # track 7
            [5.0, 0.0],  # track 7
            [0.0, 2.0],  # track 3, label 1
            [1.0, 0.0],  # track 3
        ]
    )
    labels = np.array([0, 0, 0, 1, 1])
    tracks = np.array([7, 7, 7, 3, 3])
    ids, tlogits, tlabels = aggregate_tracks(logits, labels, tracks)
    assert ids.tolist() == [3, 7]
    np.testing.assert_allclose(tlogits, [[0.5, 1.0], [5 / 3, 2 / 3]])
    assert tlabels.tolist() == [1, 0]
    m = compute_metrics(logits, labels, tracks, ["a", "b"])
    # clips: predictions [1, 1, 0, 1, 0] vs labels [0, 0, 0, 1, 1] -> 2/5 right
    assert m["clip_accuracy"] == pytest.approx(0.4)
    # tracks: both right although most clips of track 7 are wrong (mean of logits, not a vote)
    assert m["track_accuracy"] == 1.0
    assert m["clips"] == 5 and m["tracks"] == 2
    assert m["confusion_matrix"] == [[1, 2], [1, 1]]
    assert m["track_confusion_matrix"] == [[1, 0], [0, 1]]
    # class a: predicted a twice (clip 2 right, clip 4 wrong) -> precision 1/2, recall 1/3
    assert m["per_class"]["a"]["precision"] == pytest.approx(0.5)
    assert m["per_class"]["a"]["recall"] == pytest.approx(1 / 3)
    assert m["per_class"]["b"]["precision"] == pytest.approx(1 / 3)
    assert m["per_class"]["b"]["recall"] == pytest.approx(0.5)
    f1_a, f1_b = 2 * 0.5 * (1 / 3) / (0.5 + 1 / 3), 2 * (1 / 3) * 0.5 / (1 / 3 + 0.5)
    assert m["macro_f1"] == pytest.approx((f1_a + f1_b) / 2)


def test_majority_vote_and_mean_logits_differ_and_mean_is_used():
    logits = np.array([[0.1, 0.0], [0.1, 0.0], [0.0, 3.0]])  # votes: class 0; mean: class 1
    m = compute_metrics(logits, np.array([1, 1, 1]), np.array([0, 0, 0]), ["x", "y"])
    assert m["track_accuracy"] == 1.0 and m["clip_accuracy"] == pytest.approx(1 / 3)


def test_a_track_with_mixed_labels_is_an_error():
    with pytest.raises(MusicnasError, match="different labels"):
        aggregate_tracks(np.zeros((2, 2)), np.array([0, 1]), np.array([4, 4]))


def test_classes_missing_from_the_split_count_as_zero_and_the_loss_is_cross_entropy():
    logits = np.log(np.array([[0.5, 0.25, 0.25], [0.25, 0.5, 0.25]]))
    m = compute_metrics(logits, np.array([0, 1]), np.array([0, 1]), ["a", "b", "c"])
    assert m["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert m["loss"] == pytest.approx(-np.log(0.5))
    assert len(m["confusion_matrix"]) == 3


def test_label_map_by_class_name():
    assert label_map_for(["a", "b"], ["a", "b"]) is None
    assert label_map_for(["b", "a", "c"], ["a", "b"]).tolist() == [1, 0]
    with pytest.raises(MusicnasError, match="does not know: z"):
        label_map_for(["a"], ["a", "z"])


def test_confusion_png_is_written(tmp_path):
    plot_confusion([[3, 1], [0, 4]], ["a", "b"], tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_file_accuracy_aggregates_clips_per_file_within_a_track():
    # one track group of two files: file A's clips say class 1 (right), file B's say class 0 (wrong);
    # the track's mean logits lean to class 1, so the track is right while only half the files are.
    logits = np.array([[0.0, 2.0], [0.0, 2.0], [1.0, 0.0], [1.0, 0.0]])
    labels = np.array([1, 1, 1, 1])
    m = compute_metrics(logits, labels, np.zeros(4, dtype=int), ["x", "y"], file_ids=np.array([5, 5, 9, 9]))
    assert m["files"] == 2 and m["tracks"] == 1
    assert m["track_accuracy"] == 1.0
    assert m["file_accuracy"] == 0.5
    assert m["file_confusion_matrix"] == [[0, 0], [1, 1]]


def test_file_ids_of_groups_identical_paths():
    ids = file_ids_of(["b.wav", "a.wav", "b.wav", "c.wav"])
    assert ids[0] == ids[2] and len(set(ids.tolist())) == 3


def test_without_file_ids_files_are_the_tracks():
    logits = np.array([[0.0, 2.0], [1.0, 0.0]])
    m = compute_metrics(logits, np.array([1, 1]), np.array([0, 1]), ["x", "y"])
    assert m["files"] == 2 and m["file_accuracy"] == m["track_accuracy"] == 0.5
