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
def test_attack_dlg_sample_json_and_png(tmp_path, capsys, photo_set, make_lenet):
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

    assert out_png.read_bytes()[:8] == PNG_MAGIC
    assert out_png.stat().st_size > 1000

    # Same seed, same model, same attack as the library call: the same result (a short run of both; the full
    # library run is tests/test_attacks.py's reference case).
    from gleak_edu import attacks, fl

    short = tmp_path / "short.json"
    assert cli.main(["attack", "dlg", "--sample", "photos:0", "--seed", "1", "--iterations", "25",
                     "--json", str(short)]) == 0
    res = _strict_json(short)
    x, y = photo_set.batch(0)
    model = make_lenet(seed=1)
    lib = attacks.dlg(model, fl.client_gradient(model, x, y), input_shape=tuple(x.shape), num_classes=100,
                      iterations=25, truth=(x, y), seed=1)
    assert res["psnr"] == pytest.approx(lib.metrics["psnr_mean"], abs=1e-3)
    assert res["iterations"] == lib.iterations and res["evaluations"] == lib.evaluations


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
        "negative-noise": (["--sample", "photos:0", "--noise-std", "-0.1"], "--noise-std"),
        "nan-noise": (["--sample", "photos:0", "--noise-std", "nan"], "--noise-std"),
        "zero-max-grad-norm": (["--sample", "photos:0", "--defense", "full", "--max-grad-norm", "0"], "--max-grad-norm"),
        "multiplier-without-defense": (["--sample", "photos:0", "--noise-multiplier", "0.5"], "--noise-std"),
        "std-with-defense": (["--sample", "photos:0", "--defense", "full", "--noise-std", "0.1"], "--noise-multiplier"),
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
    "negative-noise", "nan-noise", "zero-max-grad-norm", "multiplier-without-defense", "std-with-defense", "prune-1.5", "prune-1", "label-500", "negative-label", "iterations-0",
    "classes-1", "unknown-model", "no-source", "both-sources",
]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_exits_2_with_one_line(case, tmp_path, capsys):
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


def test_idlg_refuses_a_batch(capsys):
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
         "--noise-std", "0.001", "--prune", "0.2", "--json", str(out_json)]
    )
    assert status == 0, capsys.readouterr().err
    res = _strict_json(out_json)
    assert res["label_true"] == 7 and res["noise_std"] == 0.001 and res["prune"] == 0.2
    assert res["noise_multiplier"] is None and res["max_grad_norm"] is None  # no --defense: no clipping, no multiplier
    assert res["source"] == str(path)
    assert res["iterations"] <= 2


# --------------------------------------------------------------------------- issue 15: one vocabulary, one registry

OLD_NAMES = {
    # old flag: (command line using it, the new flags its one-line refusal must name)
    "--noise": (["attack", "dlg", "--sample", "photos:0", "--noise", "0.1"], ["--noise-std", "--noise-multiplier"]),
    "--noise=": (["attack", "idlg", "--sample", "photos:0", "--noise=0.1"], ["--noise-std"]),
    "--sigma": (["attack", "ig", "--sample", "photos:0", "--defense", "full", "--sigma", "1"], ["--noise-multiplier"]),
    "--sigma-start": (["train", "--dp", "linear", "--sigma-start", "2", "--json", "{out}"], ["--noise-multiplier"]),
    "--sigma-end": (["train", "--dp", "linear", "--sigma-end", "0.5", "--json", "{out}"], ["--noise-multiplier-end"]),
    "--clip": (["sweep", "ppp", "--clip", "1", "--json", "{out}"], ["--max-grad-norm"]),
    "--clip dynamic": (["train", "--dp", "fixed", "--clip", "dynamic", "--json", "{out}"], ["--max-grad-norm", "--clipping dynamic"]),
    "--clip (attack)": (["attack", "dlg", "--sample", "photos:0", "--defense", "ppp", "--clip", "2"], ["--max-grad-norm"]),
    "transformer": (["attack", "transformer", "--sentence", "Now is better than never."], ["gleak attack text"]),
    "--defense noise": (["attack", "ig", "--sample", "photos:0", "--defense", "noise"], ["--defense full", "--noise-std"]),
}


@pytest.mark.parametrize("old", list(OLD_NAMES))
def test_renamed_flags_are_refused_naming_the_new_one(old, tmp_path, capsys):
    argv, new_names = OLD_NAMES[old]
    out = tmp_path / "never.json"
    status = cli.main([a.replace("{out}", str(out)) for a in argv])
    captured = capsys.readouterr()
    assert status == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("gleak: error:") and "renamed" in lines[0]
    for name in new_names:
        assert name in lines[0], lines[0]
    assert captured.out == "" and not out.exists()


def test_renamed_flag_is_refused_before_torch_is_imported():
    """The refusal comes before any heavy import: a fresh interpreter never loads torch for it."""
    code = (
        "import sys; from gleak_edu import cli; "
        "status = cli.main(['train', '--dp', 'fixed', '--sigma-start', '2', '--json', 'never.json']); "
        "print(status, 'torch' in sys.modules, 'numpy' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, MPLBACKEND="Agg"))
    assert proc.stdout.split() == ["2", "False", "False"], (proc.stdout, proc.stderr)
    assert proc.stderr.strip().splitlines() == [
        "gleak: error: --sigma-start was renamed: use --noise-multiplier (the schedule's start, relative to --max-grad-norm)"
    ]


def test_attack_choices_are_the_registry():
    """The parser's static copy (kept so that refusing bad input never imports torch) is the registry's keys, in order."""
    from gleak_edu.attacks import ATTACKS

    assert cli.ATTACK_CHOICES == tuple(ATTACKS)
    attack_parser = cli._build_parser()._subparsers._group_actions[0].choices["attack"]
    action = next(a for a in attack_parser._actions if a.dest == "attack")
    assert tuple(action.choices) == tuple(ATTACKS)


def test_analytic_json_reports_no_label(tmp_path, capsys):
    """Analytic recovery reads no label: the JSON says null, never a label taken from the truth."""
    out = tmp_path / "analytic.json"
    assert cli.main(["attack", "analytic", "--sample", "photos:3", "--json", str(out)]) == 0
    captured = capsys.readouterr()
    res = _strict_json(out)
    assert res["label_correct"] is None and res["label_accuracy"] is None and res["label_pred"] is None
    assert res["label_true"] == 3  # the truth is reported as the truth, and only there
    assert res["max_abs_error"] <= 1e-4 and res["ssim"] > 0.99
    assert "label not recovered" in captured.out


def test_the_bypass_without_a_bottleneck_is_refused(capsys):
    """The registry says the bypass needs PRECODE's bottleneck; the command refuses it without one."""
    assert cli.main(["attack", "bypass", "--sample", "photos:0", "--iterations", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--precode" in err[0] and "bottleneck" in err[0]


def test_defense_json_uses_the_new_names(tmp_path, capsys):
    out = tmp_path / "defended.json"
    status = cli.main(["attack", "idlg", "--sample", "photos:1", "--iterations", "2", "--defense", "full",
                       "--noise-multiplier", "0.5", "--max-grad-norm", "2", "--json", str(out)])
    assert status == 0, capsys.readouterr().err
    res = _strict_json(out)
    assert res["noise_multiplier"] == 0.5 and res["max_grad_norm"] == 2.0 and res["noise_std"] == 0.0
    assert res["defense"] == "full"
    assert not {"noise", "sigma", "clip"} & set(res)


def test_text_attack_json_uses_the_new_names(tmp_path, capsys):
    out = tmp_path / "text.json"
    status = cli.main(["attack", "text", "--sentence", "Now is better than never.", "--iterations", "5",
                       "--noise-multiplier", "0.5", "--max-grad-norm", "1", "--json", str(out)])
    assert status == 0, capsys.readouterr().err
    res = _strict_json(out)
    assert res["attack"] == "text" and res["noise_multiplier"] == 0.5 and res["max_grad_norm"] == 1.0
    assert res["epsilon"] > 0 and res["iterations"] <= 5
    assert not {"noise", "sigma", "clip"} & set(res)
    # a flag of the image attacks is refused, naming what the text attack takes
    assert cli.main(["attack", "text", "--sentence", "Now is better than never.", "--noise-std", "0.1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--noise-multiplier" in err[0]


def test_restarts_refused_where_the_registry_says_so(capsys):
    from gleak_edu.attacks import ATTACKS

    once = [k for k, s in ATTACKS.items() if not s.takes_restarts and s.modality == "image"]
    assert once  # GRNN, analytic
    for key in once:
        assert cli.main(["attack", key, "--sample", "photos:0", "--restarts", "2"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--restarts" in err[0] and key in err[0]


@pytest.mark.slow
def test_train_json_uses_the_new_names(tmp_path, capsys):
    """One short DP-SGD epoch with a schedule and dynamic clipping: the JSON speaks noise_multiplier and max_grad_norm."""
    out = tmp_path / "train.json"
    status = cli.main(["train", "--dp", "exponential", "--noise-multiplier", "2", "--noise-multiplier-end", "0.5",
                       "--noise-updates", "4", "--clipping", "dynamic", "--epochs", "1", "--images", "1",
                       "--iterations", "2", "--attack-steps", "0", "--json", str(out)])
    assert status == 0, capsys.readouterr().err
    res = _strict_json(out)
    assert res["noise_multiplier"] == 2.0 and res["noise_multiplier_end"] == pytest.approx(0.5)
    assert res["clipping"] == "dynamic" and res["max_grad_norm"] is None  # dynamic: a bound per step, no fixed one
    assert len(res["noise_multiplier_history"]) == len(res["max_grad_norm_history"]) == res["steps"]
    assert len(set(res["noise_multiplier_history"])) == 4
    assert all(b > 0 for b in res["max_grad_norm_history"])
    cp = res["checkpoints"][0]
    assert cp["step"] == 0 and cp["noise_multiplier"] == 2.0 and cp["max_grad_norm"] > 0
    assert res["attack_n"] == 1 and res["attack_successes"] in (0, 1)  # one checkpoint x one digit, with its interval
    assert 0 <= res["attack_success_low"] <= res["attack_success_rate"] <= res["attack_success_high"] <= 1
    words = json.dumps(res)
    for old in ('"sigma', '"clip"', '"clip_history"', '"noise_history"'):
        assert old not in words, old
