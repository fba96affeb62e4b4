"""Build the model a checkpoint describes itself, so that only --data is needed.

- A Hugging Face checkpoint folder with config.json: transformers' AutoConfig and the Auto class of the
  architecture it names (sequence, token, image, audio classification, multiple choice), never with
  trust_remote_code (code shipped in the folder is not run).
- A timm checkpoint naming its architecture (`arch`, or `args.model` of timm's train.py):
  timm.create_model(arch) with the class count read from the classifier weights.
Without the package, the one-line error says which package to install, or that --model builds it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from ..errors import CheckpointError
from .checkpoint_reader import LoadedCheckpoint
from .discovery import CheckpointFile
from .torch_files import first_line

__all__ = ["AUTO_CLASSES", "build_described_model"]

# Hugging Face architecture suffix -> the Auto class that builds it (heads whose outputs are class scores).
AUTO_CLASSES = {
    "ForSequenceClassification": "AutoModelForSequenceClassification",
    "ForTokenClassification": "AutoModelForTokenClassification",
    "ForImageClassification": "AutoModelForImageClassification",
    "ForAudioClassification": "AutoModelForAudioClassification",
    "ForMultipleChoice": "AutoModelForMultipleChoice",
}
MODEL_HINT = "pass --model FILE.py:FUNC or define build_model() in postmortem_spec.py"


def build_described_model(checkpoint: CheckpointFile, loaded: LoadedCheckpoint) -> Any:
    """A fresh nn.Module for a checkpoint that says what it is; CheckpointError naming the way out otherwise."""
    config = checkpoint.path / "config.json" if checkpoint.path.is_dir() else None
    if config is not None and config.is_file():
        return _transformers_model(config)
    if loaded.architecture is not None and loaded.state_dict is not None:
        return _timm_model(loaded.architecture, loaded.state_dict, checkpoint.path)
    raise CheckpointError(f"{checkpoint.path}: holds a state_dict, so postmortem needs the model: {MODEL_HINT}")


def _transformers_model(config_file: Path) -> Any:
    try:
        import transformers
    except ImportError as exc:
        raise CheckpointError(f"{config_file.parent}: a Hugging Face checkpoint (config.json): install transformers "
                              f"to build its model from it, or {MODEL_HINT}") from exc
    try:
        config = transformers.AutoConfig.from_pretrained(str(config_file.parent), local_files_only=True,
                                                         trust_remote_code=False)
    except Exception as exc:  # transformers raises ValueError, OSError, KeyError ... for configs it cannot use
        raise CheckpointError(f"{config_file}: transformers cannot build a model from it ({first_line(exc)}); "
                              f"{MODEL_HINT}") from exc
    architectures = getattr(config, "architectures", None) or []
    auto_names = [auto for arch in architectures for suffix, auto in AUTO_CLASSES.items() if arch.endswith(suffix)]
    if not auto_names:
        raise CheckpointError(f"{config_file}: names the architecture(s) {', '.join(architectures) or 'none'}, "
                              f"which do not end in {', '.join(AUTO_CLASSES)}; {MODEL_HINT}")
    return getattr(transformers, auto_names[0]).from_config(config, trust_remote_code=False)


def _classifier_outputs(state: Mapping[str, Any], classifier: str) -> int | None:
    """Rows of the classifier's weight (a prefix such as 'module.' allowed before its name)."""
    suffix = f"{classifier}.weight"
    for key, tensor in state.items():
        if (key == suffix or key.endswith("." + suffix)) and getattr(tensor, "ndim", 0) >= 1:
            return int(tensor.shape[0])
    return None


def _timm_model(arch: str, state: Mapping[str, Any], source: Path) -> Any:
    try:
        import timm
    except Exception as exc:  # ImportError, or a broken torchvision raising while timm imports it
        raise CheckpointError(f"{source}: names the timm architecture {arch!r}, but timm does not import here "
                              f"({type(exc).__name__}: {first_line(exc)}); install timm to build it, or "
                              f"{MODEL_HINT}") from exc
    try:
        model = timm.create_model(arch, pretrained=False)
    except Exception as exc:  # an unknown name raises RuntimeError; others vary
        raise CheckpointError(f"{source}: timm cannot build {arch!r} ({first_line(exc)}); {MODEL_HINT}") from exc
    classifier = model.pretrained_cfg.get("classifier")
    classifier = classifier[0] if isinstance(classifier, (list, tuple)) else classifier
    n_classes = _classifier_outputs(state, classifier) if classifier else None
    if n_classes is not None and n_classes != model.num_classes:
        model.reset_classifier(n_classes)
    return model
