"""Bad input: each case exits with status 2 and one clear line on stderr naming the file and the problem
(or, when only some checkpoints are bad, exits 0 and lists them under metrics.json "skipped")."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch import nn

from _fixtures_inputs import N_CLASSES, N_IN, Net, make_run, report, validation_tensors
from postmortem.config import build_config, read_config_file
from postmortem.errors import ConfigError


def one_error_line(err: str) -> str:
    """The stderr of an exit-2 run: exactly one line, in the contract's form."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("postmortem: error: "), err
    assert "Traceback" not in err
    return lines[0]


# ----------------------------------------------------------------------------- finding checkpoints
def test_missing_run_directory(tmp_path, capsys):
    code, err, _ = report(tmp_path / "nope", out=tmp_path / "out", capsys=capsys)
    assert code == 2
    assert re.fullmatch(r"postmortem: error: .*nope: run directory not found", one_error_line(err))


def test_missing_checkpoint_directory(tmp_path, capsys):
    run, _ = make_run(tmp_path, n_epochs=1)
    code, err, _ = report(run, "--checkpoints", str(tmp_path / "elsewhere"), "--data", str(run / "val.pt"), capsys=capsys)
    assert code == 2
    assert one_error_line(err).endswith("elsewhere: checkpoint directory not found")


def test_empty_checkpoint_directory(tmp_path, capsys):
    run, _ = make_run(tmp_path, n_epochs=1)
    for path in (run / "checkpoints").iterdir():
        path.unlink()
    code, err, _ = report(run, "--data", str(run / "val.pt"), capsys=capsys)
    assert code == 2
    line = one_error_line(err)
    assert "checkpoints: no checkpoints found (looked for *.pt *.pth *.ckpt *.bin *.safetensors" in line


def test_glob_matching_nothing(tmp_path, capsys):
    run, _ = make_run(tmp_path, n_epochs=1)
    code, err, _ = report(run, "--checkpoints", str(run / "checkpoints" / "*.ckpt"), "--data", str(run / "val.pt"), capsys=capsys)
    assert code == 2
    assert "*.ckpt: no checkpoints found" in one_error_line(err)


# ----------------------------------------------------------------------------- unreadable checkpoints
def test_a_file_that_is_not_a_checkpoint(tmp_path, capsys):
    run, _ = make_run(tmp_path, n_epochs=1)
    (run / "checkpoints" / "epoch_1.pt").write_text("hello, I am a text file\n")
    code, err, _ = report(run, "--data", str(run / "val.pt"), capsys=capsys)
    assert code == 2
    assert one_error_line(err).endswith(
        "epoch_1.pt: not a checkpoint: not a zip archive (torch.save), a pickle (legacy torch.save) or a "
        "safetensors file (it starts with b'hello, I')")


def test_an_empty_file(tmp_path, capsys):
    run, _ = make_run(tmp_path, n_epochs=1)
    (run / "checkpoints" / "epoch_1.pt").write_bytes(b"")
    code, err, _ = report(run, "--data", str(run / "val.pt"), capsys=capsys)
    assert code == 2
    assert one_error_line(err).endswith("epoch_1.pt: empty file (0 bytes), not a checkpoint")


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-pickle"])
def test_a_truncated_checkpoint(tmp_path, capsys, legacy):
    run, _ = make_run(tmp_path, n_epochs=1)
    path = run / "checkpoints" / "epoch_1.pt"
    torch.save(Net().state_dict(), path, _use_new_zipfile_serialization=not legacy)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    code, err, _ = report(run, "--data", str(run / "val.pt"), capsys=capsys)
    assert code == 2
    assert re.search(r"epoch_1\.pt: (truncated or corrupt checkpoint|not a readable checkpoint, truncated or corrupt\?)",
                     one_error_line(err))


def test_a_truncated_safetensors_file(tmp_path, capsys):
    from safetensors.torch import save_file

    run, _ = make_run(tmp_path, n_epochs=1)
    (run / "checkpoints" / "epoch_1.pt").unlink()
    path = run / "checkpoints" / "epoch_1.safetensors"
    save_file(Net().state_dict(), str(path))
    path.write_bytes(path.read_bytes()[:-40])
    code, err, _ = report(run, "--data", str(run / "val.pt"), capsys=capsys)
    assert code == 2
    assert "epoch_1.safetensors: truncated or corrupt safetensors file" in one_error_line(err)


def test_keys_that_do_not_fit_the_model(tmp_path, capsys):
    run, _ = make_run(tmp_path, n_epochs=1)
    other = nn.Sequential(nn.Linear(N_IN, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, N_CLASSES))
    torch.save(other.state_dict(), run / "checkpoints" / "epoch_1.pt")
    code, err, _ = report(run, "--data", str(run / "val.pt"), capsys=capsys)
    assert code == 2
    line = one_error_line(err)
    assert "epoch_1.pt: weights do not fit the model:" in line
    assert "4 missing key(s): body.0.bias, body.0.weight, body.2.bias, body.2.weight" in line
    assert "6 unexpected key(s): 0.bias, 0.weight, 2.bias, 2.weight" in line


def test_shapes_that_do_not_fit_the_model_name_the_number_of_classes(tmp_path, capsys):
    run, _ = make_run(tmp_path, n_epochs=1)
    torch.save(Net(n_classes=5).state_dict(), run / "checkpoints" / "epoch_1.pt")
    code, err, _ = report(run, "--data", str(run / "val.pt"), capsys=capsys)
    assert code == 2
    assert one_error_line(err).endswith(
        "epoch_1.pt: weights do not fit the model: 2 shape mismatch(es): body.2.bias (5,) vs model (3,); "
        "body.2.weight (5, 8) vs model (3, 8) (the checkpoint has 5 outputs in body.2, the model 3: "
        "a different number of classes?)")


def test_one_bad_checkpoint_is_skipped_not_fatal(tmp_path, capsys):
    run, _ = make_run(tmp_path, n_epochs=3)
    (run / "checkpoints" / "epoch_2.pt").write_bytes(b"\x80\x02garbage")
    code, err, metrics = report(run, "--data", str(run / "val.pt"), capsys=capsys)
    assert code == 0, err
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 3]
    [skipped] = metrics["skipped"]
    assert skipped["checkpoint"] == "epoch_2.pt"
    assert skipped["error"].endswith("epoch_2.pt: truncated or corrupt checkpoint (ValueError: invalid literal for "
                                     "int() with base 10: b'arbag')")   # the 'g' of garbage is pickle's GET opcode


def test_all_checkpoints_failing_alike_give_one_message(tmp_path, capsys):
    run, _ = make_run(tmp_path, n_epochs=2)
    for path in (run / "checkpoints").iterdir():
        torch.save(Net(n_classes=4).state_dict(), path)
    code, err, _ = report(run, "--data", str(run / "val.pt"), capsys=capsys)
    assert code == 2
    line = one_error_line(err)
    assert re.fullmatch(r"postmortem: error: .*epoch_1\.pt: weights do not fit the model: .* \(the same for all 2 "
                        r"checkpoints\)", line), line


def test_all_checkpoints_failing_differently_name_the_first(tmp_path, capsys):
    run, _ = make_run(tmp_path, n_epochs=2)
    torch.save(Net(n_classes=4).state_dict(), run / "checkpoints" / "epoch_1.pt")
    (run / "checkpoints" / "epoch_2.pt").write_bytes(b"")
    code, err, _ = report(run, "--data", str(run / "val.pt"), capsys=capsys)
    assert code == 2
    assert re.fullmatch(r"postmortem: error: all 2 checkpoints failed; the first: .*epoch_1\.pt: weights do not fit "
                        r"the model: .*", one_error_line(err))


# ----------------------------------------------------------------------------- classes and outputs
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_checkpoints_that_disagree_on_the_number_of_classes(tmp_path, capsys):
    """TorchScript archives carry their own model, so nothing but their outputs says how many classes."""
    run, _ = make_run(tmp_path, n_epochs=0, spec=None)
    torch.manual_seed(0)
    for epoch, n_classes in ((1, 3), (2, 4), (3, 3), (4, 3)):
        traced = torch.jit.trace(Net(n_classes=n_classes).eval(), torch.zeros(2, N_IN))
        traced.save(str(run / "checkpoints" / f"epoch_{epoch}.pt"))
    code, err, metrics = report(run, "--data", str(run / "val.pt"), capsys=capsys)
    assert code == 0, err
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 3, 4]
    [skipped] = metrics["skipped"]
    assert skipped["checkpoint"] == "epoch_2.pt"
    assert skipped["error"].endswith("epoch_2.pt: outputs have 4 classes, but 3 other checkpoint(s) (epoch_1.pt, "
                                     "epoch_3.pt, epoch_4.pt) have 3; the checkpoints of one run must agree on the "
                                     "number of classes")


def test_class_names_that_do_not_match_the_outputs(tmp_path, capsys):
    run, _ = make_run(tmp_path, n_epochs=1)
    code, err, _ = report(run, "--data", str(run / "val.pt"), "--class-names", "a,b", capsys=capsys)
    assert code == 2
    assert one_error_line(err).endswith("epoch_1.pt: outputs have 3 classes but 2 class names were given (a, b)")


def test_nan_outputs_skip_that_epoch_naming_the_count_and_keep_going(tmp_path, capsys):
    run, _ = make_run(tmp_path, n_epochs=3)
    state = torch.load(run / "checkpoints" / "epoch_2.pt")
    state["body.0.weight"][0, 0] = float("nan")     # one hidden unit is NaN for every input
    torch.save(state, run / "checkpoints" / "epoch_2.pt")
    code, err, metrics = report(run, "--data", str(run / "val.pt"), capsys=capsys)
    assert code == 0, err
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 3]
    [skipped] = metrics["skipped"]
    assert skipped["error"].endswith("epoch_2.pt: epoch 2: 40 of 40 counted items have NaN or inf outputs "
                                     "(diverged training, or an overflow in float16?); this checkpoint is left out")


def test_nan_outputs_in_some_items_are_counted(tmp_path, capsys):
    """Saved predictions: 3 NaN rows, one +inf row, and one row of -inf only, in epoch 2 of 3."""
    predictions = tmp_path / "predictions"
    predictions.mkdir()
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 20)
    for epoch in (1, 2, 3):
        outputs = rng.normal(size=(20, 3))
        if epoch == 2:
            outputs[[1, 4, 9], 0] = np.nan
            outputs[11, 2] = np.inf
            outputs[12, :] = -np.inf
            outputs[13, 0] = -np.inf      # one class impossible: a probability of 0, still finite
        np.savez(predictions / f"epoch_{epoch}.npz", outputs=outputs, labels=labels, epoch=epoch)
    run = tmp_path / "run"
    run.mkdir()
    code, err, metrics = report(run, "--predictions", str(predictions), capsys=capsys)
    assert code == 0, err
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 3]
    assert metrics["skipped"][0]["error"].endswith(
        "epoch_2.npz: epoch 2: 5 of 20 counted items have NaN or inf outputs (diverged training, or an "
        "overflow in float16?); this checkpoint is left out")


# ----------------------------------------------------------------------------- labels and masks
def test_labels_outside_the_classes(tmp_path, capsys):
    run, _ = make_run(tmp_path, n_epochs=2)
    x, y = validation_tensors()
    y[3], y[7], y[8] = 3, -100, 7        # -100 is ignore_index: fine; 3 and 7 are not classes
    torch.save({"inputs": x, "labels": y}, run / "val.pt")
    code, err, _ = report(run, "--data", str(run / "val.pt"), capsys=capsys)
    assert code == 2
    assert one_error_line(err).endswith(
        "val.pt: 2 counted label(s) outside [0, 3) (values 3, 7); the model outputs 3 classes, and only "
        "ignore_index (-100) or a mask of 0 may mark items that do not count (the same for all 2 checkpoints)")


def test_labels_outside_the_classes_but_masked_out_are_fine(tmp_path):
    run, _ = make_run(tmp_path, n_epochs=1)
    x, y = validation_tensors()
    mask = torch.ones(len(y), dtype=torch.long)
    y[3], mask[3] = 9, 0
    torch.save({"inputs": x, "labels": y, "mask": mask}, run / "val.pt")
    from postmortem.evaluate.runner import evaluate_run
    evaluation = evaluate_run(build_config(run, {}, {"data": str(run / "val.pt"), "quiet": True,
                                                     "out": str(tmp_path / "r")}))
    assert len(evaluation.items) == len(y) - 1


def test_mask_and_labels_of_different_shapes(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoints").mkdir()
    (run / "postmortem_spec.py").write_text(TAGGER_SPEC)
    namespace: dict = {}
    exec(TAGGER_SPEC, namespace)
    torch.save(namespace["build_model"]().state_dict(), run / "checkpoints" / "epoch_1.pt")
    tokens = torch.randint(0, 10, (4, 7))
    torch.save({"inputs": tokens, "labels": torch.randint(0, 3, (4, 7)), "mask": torch.ones(4, 6)}, run / "val.pt")
    code, err, _ = report(run, "--data", str(run / "val.pt"), capsys=capsys)
    assert code == 2
    assert one_error_line(err).endswith("val.pt: mask of shape (4, 6) does not match labels of shape (4, 7)")


TAGGER_SPEC = '''
import torch
from torch import nn

def build_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 3))
'''


def test_float_labels_that_are_not_class_indices(tmp_path, capsys):
    run, _ = make_run(tmp_path, n_epochs=1)
    x, _ = validation_tensors()
    torch.save({"inputs": x, "labels": torch.rand(len(x))}, run / "val.pt")
    code, err, _ = report(run, "--data", str(run / "val.pt"), capsys=capsys)
    assert code == 2
    assert "val.pt: labels must be integer class indices, got values such as" in one_error_line(err)


def test_a_data_file_without_labels(tmp_path, capsys):
    run, _ = make_run(tmp_path, n_epochs=1)
    x, _ = validation_tensors()
    torch.save({"inputs": x}, run / "val.pt")
    code, err, _ = report(run, "--data", str(run / "val.pt"), capsys=capsys)
    assert code == 2
    assert one_error_line(err).endswith("val.pt: missing 'labels' (a data file holds 'inputs', 'labels' and "
                                        "optionally 'mask', 'ids'; found ['inputs'])")


def test_a_missing_data_file(tmp_path, capsys):
    run, _ = make_run(tmp_path, n_epochs=1)
    code, err, _ = report(run, "--data", str(tmp_path / "val.npz"), capsys=capsys)
    assert code == 2
    assert one_error_line(err).endswith("val.npz: validation data file not found")


# ----------------------------------------------------------------------------- the user's code
def test_a_spec_whose_build_model_raises_shows_its_own_traceback(tmp_path, capsys):
    spec = '''
def helper(width):
    raise ValueError(f"width {width} is not supported")

def build_model():
    return helper(7)
'''
    run, _ = make_run(tmp_path, n_epochs=2, spec=spec)
    code, err, _ = report(run, "--data", str(run / "val.pt"), capsys=capsys)
    assert code == 2
    lines = err.rstrip().splitlines()
    assert re.fullmatch(r"postmortem: error: .*postmortem_spec\.py:build_model: raised ValueError: width 7 is not supported",
                        lines[0])
    assert lines[1] == "  traceback from your code (last lines):"
    tail = "\n".join(lines[2:])
    assert all(line.startswith("  | ") for line in lines[2:])
    assert 'postmortem_spec.py", line 6, in build_model' in tail and "return helper(7)" in tail
    assert 'postmortem_spec.py", line 3, in helper' in tail
    assert tail.endswith("| ValueError: width 7 is not supported")
    assert "postmortem/" not in tail.replace("postmortem_spec", "")   # none of postmortem's own frames


def test_a_spec_that_raises_on_import(tmp_path, capsys):
    run, _ = make_run(tmp_path, n_epochs=1, spec="import torch\nimport not_a_module_anywhere\ndef build_model():\n    pass\n")
    code, err, _ = report(run, "--data", str(run / "val.pt"), capsys=capsys)
    assert code == 2
    lines = err.rstrip().splitlines()
    assert lines[0].endswith("postmortem_spec.py: importing it raised ModuleNotFoundError: No module named "
                             "'not_a_module_anywhere'")
    assert "line 2, in <module>" in err


def test_a_model_whose_forward_fails_on_the_data(tmp_path, capsys):
    run, _ = make_run(tmp_path, n_epochs=1)
    torch.save({"inputs": torch.randn(5, N_IN + 1), "labels": torch.zeros(5, dtype=torch.long)}, run / "val.pt")
    code, err, _ = report(run, "--data", str(run / "val.pt"), capsys=capsys)
    assert code == 2
    lines = err.rstrip().splitlines()
    assert "Net.forward on a batch of" in lines[0] and "val.pt: raised RuntimeError: mat1 and mat2 shapes cannot be multiplied" in lines[0]
    assert "in forward" in err and "return self.body(x)" in err


def test_a_missing_spec_function(tmp_path, capsys):
    run, _ = make_run(tmp_path, n_epochs=1)
    code, err, _ = report(run, "--data", str(run / "val.pt"), "--model", f"{run / 'postmortem_spec.py'}:make_it",
                          capsys=capsys)
    assert code == 2
    assert one_error_line(err).endswith("postmortem_spec.py: has no function 'make_it' (needed for model)")


# ----------------------------------------------------------------------------- postmortem.toml
def test_an_unknown_option_in_postmortem_toml_names_it_and_suggests_the_closest(tmp_path, capsys):
    run, _ = make_run(tmp_path, n_epochs=1)
    (run / "postmortem.toml").write_text('data = "val.pt"\nclas-names = "a,b,c"\n')
    code, err, _ = report(run, capsys=capsys)
    assert code == 2
    assert one_error_line(err).endswith("postmortem.toml: unknown option 'clas-names'; did you mean 'class-names'?")


def test_an_unknown_option_with_nothing_close(tmp_path):
    (tmp_path / "postmortem.toml").write_text("colour = 'red'\n")
    with pytest.raises(ConfigError, match=r"postmortem\.toml: unknown option 'colour'$"):
        read_config_file(tmp_path)


@pytest.mark.parametrize("table, message", [
    ("min-recal-drop = 0.1", "unknown threshold 'min-recal-drop' in [diagnosis]; did you mean 'min-recall-drop'?"),
    ("candidate-window = 2.5", "[diagnosis] threshold 'candidate-window': expected an integer, got 2.5"),
    ("min-leading-share = 'most'", "[diagnosis] threshold 'min-leading-share': expected a number, got 'most'"),
])
def test_a_bad_diagnosis_threshold_in_postmortem_toml(tmp_path, capsys, table, message):
    run, _ = make_run(tmp_path, n_epochs=1)
    (run / "postmortem.toml").write_text(f'data = "val.pt"\n[diagnosis]\n{table}\n')
    code, err, _ = report(run, capsys=capsys)
    assert code == 2
    assert one_error_line(err).endswith(f"postmortem.toml: {message}")


def test_diagnosis_thresholds_from_postmortem_toml_reach_the_findings(tmp_path):
    """[diagnosis] sets DiagnosisConfig: a finding prints the threshold given there beside its number."""
    import json

    import numpy as np

    from postmortem.config import build_config
    from postmortem.pipeline import write_report

    rng = np.random.default_rng(0)
    labels = np.arange(1200) % 4
    logits = rng.normal(size=(1200, 4))
    logits[np.arange(1200), labels] += 2.0
    (tmp_path / "preds").mkdir()
    for epoch, scale in enumerate((0.5, 1.0, 2.0, 3.0), start=1):       # overconfidence: T follows the scale
        np.savez(tmp_path / "preds" / f"epoch_{epoch}.npz", outputs=scale * logits, labels=labels)
    (tmp_path / "postmortem.toml").write_text('predictions = "preds"\nno-pdf = true\nquiet = true\n'
                                              "[diagnosis]\nmin-last-temperature = 1.2\ncandidate-window = 2\n")
    config = build_config(tmp_path, read_config_file(tmp_path), {})
    assert dict(config.diagnosis) == {"min_last_temperature": 1.2, "candidate_window": 2}
    write_report(config)
    findings = json.loads((tmp_path / "postmortem-report" / "metrics.json").read_text())["findings"]
    overconfidence = next(f for f in findings if f["id"] == "overconfidence")
    assert overconfidence["thresholds"]["temperature_last"] == 1.2


def test_a_toml_file_that_does_not_parse(tmp_path, capsys):
    run, _ = make_run(tmp_path, n_epochs=1)
    (run / "postmortem.toml").write_text("data = val.pt\n")
    code, err, _ = report(run, capsys=capsys)
    assert code == 2
    assert "postmortem.toml: not a readable TOML file (" in one_error_line(err)


@pytest.mark.parametrize("options, message", [
    ({"outputs": "logit"}, "option 'outputs': expected one of auto, logits, log_probs, probs, got 'logit'"),
    ({"compare": "5"}, "option 'compare': expected two epochs, FROM,TO, got '5'"),
    ({"class_weights": "1,x"}, "option 'class-weights': cannot read '1,x'"),
    ({"class_weights": [1, -2]}, "option 'class-weights': weights must be finite and >= 0, got [1.0, -2.0]"),
    ({"class_names": "a,a"}, "option 'class-names': names must be unique, got ['a', 'a']"),
    ({"batch_size": 0}, "option 'batch-size': expected a positive integer, got 0"),
    ({"batch_size": 1.5}, "option 'batch-size': expected an integer, got 1.5"),
    ({"ignore_index": "x"}, "option 'ignore-index': expected an integer, got 'x'"),
    ({"quiet": "false"}, "option 'quiet': expected true or false, got 'false'"),
    ({"data": 3}, "option 'data': expected a string, got 3"),
])
def test_bad_option_values(tmp_path, options, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        build_config(tmp_path, options, {})


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_a_device_this_torch_cannot_use(tmp_path, capsys):
    run, _ = make_run(tmp_path, n_epochs=1)
    code, err, _ = report(run, "--data", str(run / "val.pt"), "--device", "cuda", capsys=capsys)
    assert code == 2
    assert one_error_line(err).startswith("postmortem: error: option 'device': 'cuda' is not available to this torch ")


def test_a_checkpoint_folder_with_several_weights_files(tmp_path, capsys):
    run, _ = make_run(tmp_path, n_epochs=1)
    folder = run / "checkpoints" / "checkpoint-2"
    folder.mkdir()
    torch.save(Net().state_dict(), folder / "a.pt")
    torch.save(Net().state_dict(), folder / "b.pt")
    from postmortem.config import build_config
    from postmortem.evaluate.runner import evaluate_run
    evaluation = evaluate_run(build_config(run, {}, {"data": str(run / "val.pt"), "quiet": True, "out": str(tmp_path / "r")}))
    [skipped] = evaluation.skipped
    assert skipped.error.endswith("checkpoint-2: holds several weights files (a.pt, b.pt); point --checkpoints at one")
