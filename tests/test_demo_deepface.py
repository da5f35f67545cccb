"""The DeepFace verification demo (cvops.demos.deepface) end to end on its --quick path: real LFW
faces from scikit-image, a few semihard triplet steps, the LFW-protocol evaluation, and its files.
Seeded, so the thresholds (set well below the measured numbers) do not flake."""

import importlib.util
import json

import pytest
import torch

needs_skimage = pytest.mark.skipif(
    importlib.util.find_spec("skimage") is None, reason="the demo's faces are scikit-image's lfw_subset()"
)


@needs_skimage
def test_photos_and_pairs():
    from cvops.demos.deepface import load_faces, make_pairs, make_photos

    faces = load_faces()
    assert faces.shape == (100, 25, 25)
    photos, labels = make_photos(faces, range(5, 9), 3, torch.Generator().manual_seed(0))
    assert photos.shape == (12, 3, 152, 152) and labels.tolist() == [5, 5, 5, 6, 6, 6, 7, 7, 7, 8, 8, 8]
    assert torch.equal(photos[:, 0], photos[:, 2]) and not torch.equal(photos[0], photos[1])
    first, second, same = make_pairs(labels, 10, 10, 5, torch.Generator().manual_seed(0))
    assert same.tolist() == ([True] * 2 + [False] * 2) * 5  # each fold balanced, as LFW's
    assert torch.equal(labels[first] == labels[second], same) and bool((first != second).all())
    assert len({(int(a), int(b)) for a, b in zip(first, second)}) == 20


@needs_skimage
def test_quick_demo_trains_and_verifies(tmp_path, capsys):
    from cvops.demos.deepface import main

    main([str(tmp_path), "--quick"])
    assert (tmp_path / "roc.png").stat().st_size > 0
    measures = json.loads((tmp_path / "measures.json").read_text())
    out = capsys.readouterr().out
    assert "verification" in out and "AUC" in out

    # Measured (seed 0): probe loss 0.194 → 0.126; verification 0.67 → 0.71, AUC 0.728 → 0.790.
    assert measures["probe_loss_after"] < 0.85 * measures["probe_loss_before"]
    trained, untrained = measures["trained"], measures["untrained"]
    assert trained["accuracy"] > 0.62 and trained["auc"] > 0.7
    assert trained["auc"] > untrained["auc"] + 0.02
    assert measures["pairs"] == {"matched": 100, "mismatched": 100}
