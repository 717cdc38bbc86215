"""The ``gleak`` command (gleak_edu.cli): in-process through main(argv), and once as a real process."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gleak_edu import cli

REQUIRED_KEYS = {
    "attack", "model", "seed", "psnr", "ssim", "mse", "label_true", "label_pred", "label_correct",
    "seconds", "evaluations", "iterations", "seconds_to_30db", "history",
}
HISTORY_KEYS = {"iteration", "evaluations", "seconds", "loss", "psnr"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _strict_json(path: Path) -> dict:
    """JSON as the standard defines it: NaN and Infinity are refused."""

    def refuse(constant):
        raise AssertionError(f"non-standard JSON constant {constant} in {path}")

    return json.loads(path.read_text(), parse_constant=refuse)


def _gleak_command() -> list[str]:
    script = Path(sys.executable).parent / "gleak"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "gleak_edu.cli"]


@pytest.mark.slow
def test_attack_dlg_sample_json_and_png(tmp_path, capsys, cached_photos, dlg_photo0):
    out_json = tmp_path / "out" / "result.json"  # the parent folder does not exist yet
    out_png = tmp_path / "figs" / "result.png"
    status = cli.main(
        ["attack", "dlg", "--sample", "photos:0", "--seed", "1", "--json", str(out_json), "--png", str(out_png)]
    )
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "Traceback" not in captured.err
    assert "PSNR" in captured.out  # the one-line summary

    res = _strict_json(out_json)
    assert REQUIRED_KEYS <= set(res)
    assert res["attack"] == "DLG" and res["model"] == "lenet-zhu" and res["seed"] == 1
    assert res["psnr"] >= 30
    assert res["label_correct"] is True
    assert res["label_true"] == res["label_pred"] == 0  # photo 0 has label 0
    assert 0 < res["ssim"] <= 1
    assert res["mse"] == pytest.approx(10 ** (-res["psnr"] / 10), rel=1e-6)
    assert isinstance(res["iterations"], int) and isinstance(res["evaluations"], int)
    assert res["evaluations"] >= res["iterations"] >= 1
    assert res["seconds_to_30db"] is not None and 0 < res["seconds_to_30db"] <= res["seconds"]

    hist = res["history"]
    assert isinstance(hist, list) and len(hist) == res["iterations"]
    assert all(isinstance(h, dict) and HISTORY_KEYS <= set(h) for h in hist)
    evals = [h["evaluations"] for h in hist]
    assert all(b > a for a, b in zip(evals, evals[1:]))
    assert max(h["psnr"] for h in hist) >= 30

    # Same seed, same model, same attack as the library call: the same result.
    _, _, lib = dlg_photo0
    assert res["psnr"] == pytest.approx(lib.metrics["psnr_mean"], abs=1e-3)
    assert res["iterations"] == lib.iterations and res["evaluations"] == lib.evaluations

    assert out_png.read_bytes()[:8] == PNG_MAGIC
    assert out_png.stat().st_size > 1000


def test_attack_idlg_short_run_in_a_real_process(tmp_path):
    """The installed console script, in a fresh interpreter: exit 0, standard JSON."""
    out_json = tmp_path / "idlg.json"
    env = dict(os.environ, MPLBACKEND="Agg")
    proc = subprocess.run(
        [*_gleak_command(), "attack", "idlg", "--sample", "photos:2", "--iterations", "5", "--json", str(out_json)],
        capture_output=True, text=True, timeout=180, env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    res = _strict_json(out_json)
    assert REQUIRED_KEYS <= set(res)
    assert res["attack"] == "iDLG" and res["label_true"] == 2 and res["seed"] == 0
    assert res["iterations"] <= 5
    t30 = res["seconds_to_30db"]
    assert t30 is None or (isinstance(t30, (int, float)) and math.isfinite(t30) and t30 >= 0)
    assert len(res["history"]) <= 5


def test_bad_input_in_a_real_process_is_one_line():
    proc = subprocess.run(
        [*_gleak_command(), "attack", "dlg", "--sample", "photos:0", "--prune", "1.5"],
        capture_output=True, text=True, timeout=180, env=dict(os.environ, MPLBACKEND="Agg"),
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gleak: error:") and "--prune" in lines[0]


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    text_file = tmp_path / "x.png"
    text_file.write_text("not an image\n")
    return {
        "missing-file": (["--image", str(tmp_path / "missing.png")], "missing.png"),
        "non-image-file": (["--image", str(text_file)], "x.png"),
        "unknown-set": (["--sample", "cifar:0"], "cifar"),
        "index-out-of-range": (["--sample", "photos:99"], "99"),
        "malformed-sample": (["--sample", "photos"], "SET:INDEX"),
        "batch-past-end": (["--sample", "photos:12", "--batch", "3"], "runs past"),
        "batch-and-list": (["--sample", "photos:0,1", "--batch", "2"], "not both"),
        "batch-with-label": (["--sample", "photos:0", "--batch", "2", "--label", "3"], "single image"),
        "batch-with-image": (["--image", str(text_file), "--batch", "2"], "--batch"),
        "negative-noise": (["--sample", "photos:0", "--noise", "-0.1"], "--noise"),
        "nan-noise": (["--sample", "photos:0", "--noise", "nan"], "--noise"),
        "prune-1.5": (["--sample", "photos:0", "--prune", "1.5"], "--prune"),
        "prune-1": (["--sample", "photos:0", "--prune", "1"], "--prune"),
        "label-500": (["--sample", "photos:0", "--label", "500"], "500"),
        "negative-label": (["--sample", "photos:0", "--label", "-1"], "-1"),
        "iterations-0": (["--sample", "photos:0", "--iterations", "0"], "--iterations"),
        "classes-1": (["--sample", "photos:0", "--classes", "1"], "--classes"),
        "unknown-model": (["--sample", "photos:0", "--model", "resnet"], "resnet"),
        "no-source": ([], "--image"),
        "both-sources": (["--image", str(text_file), "--sample", "photos:0"], "--sample"),
    }


BAD_CASES = [
    "missing-file", "non-image-file", "unknown-set", "index-out-of-range", "malformed-sample",
    "batch-past-end", "batch-and-list", "batch-with-label", "batch-with-image",
    "negative-noise", "nan-noise", "prune-1.5", "prune-1", "label-500", "negative-label", "iterations-0",
    "classes-1", "unknown-model", "no-source", "both-sources",
]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_exits_2_with_one_line(case, tmp_path, capsys, cached_photos):
    args, must_mention = _bad_inputs(tmp_path)[case]
    out_json = tmp_path / "never.json"
    # "--iterations 1" comes last: a bad value given earlier must still be refused.
    status = cli.main(["attack", "dlg", *args, "--iterations", "1", "--json", str(out_json)])
    captured = capsys.readouterr()
    assert status == 2
    assert "Traceback" not in captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("gleak: error:")
    assert must_mention in lines[0]
    assert captured.out == ""
    assert not out_json.exists()  # nothing is written for a refused command


def test_idlg_refuses_a_batch(capsys, cached_photos):
    assert cli.main(["attack", "idlg", "--sample", "photos:0,1", "--iterations", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "single image" in err[0]


@pytest.mark.slow
def test_grnn_on_faces_reports_reidentification(tmp_path, capsys):
    """GRNN on two LFW faces: per-image PSNR/SSIM, label accuracy and re-identification in the JSON."""
    out = tmp_path / "grnn.json"
    assert cli.main(["attack", "grnn", "--sample", "lfw:3", "--batch", "2", "--iterations", "300", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["attack"] == "GRNN" and res["model"] == "lenet5" and res["batch"] == 2
    assert len(res["psnr_per_image"]) == len(res["ssim_per_image"]) == 2
    assert res["psnr"] == pytest.approx(sum(res["psnr_per_image"]) / 2)
    assert res["label_accuracy"] == 1.0 and res["label_true"] == [3, 4]
    assert res["reid_top1"] == 1.0 and res["reid_ranks"] == [1, 1]
    assert res["psnr"] > 15


def test_bad_command_exits_2(capsys):
    assert cli.main(["attak", "dlg"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gleak: error:")
    assert cli.main([]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gleak: error:")


def test_attack_image_file_with_defenses(tmp_path, capsys):
    """--image with --label and --size, plus noise and pruning: a short run that works."""
    import numpy as np
    from skimage import io

    rng = np.random.default_rng(0)
    img = (rng.random((40, 50, 3)) * 255).astype(np.uint8)
    path = tmp_path / "photo.png"
    io.imsave(path, img)
    out_json = tmp_path / "r.json"
    status = cli.main(
        ["attack", "idlg", "--image", str(path), "--label", "7", "--size", "16", "--iterations", "2",
         "--noise", "0.001", "--prune", "0.2", "--json", str(out_json)]
    )
    assert status == 0, capsys.readouterr().err
    res = _strict_json(out_json)
    assert res["label_true"] == 7 and res["noise"] == 0.001 and res["prune"] == 0.2
    assert res["source"] == str(path)
    assert res["iterations"] <= 2
