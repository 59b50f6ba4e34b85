"""Write docs/api.md, the API reference, from the public API's signatures and docstrings.

    python scripts/api_reference.py          # rewrite docs/api.md
    python scripts/api_reference.py --check  # exit 1 if docs/api.md is stale (tests/test_packaging.py runs this)
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "docs" / "api.md"

# Modules in the order of the package's layout, what each is for, and (None: every public function and
# class defined there) the names users call.
MODULES = {
    "lookupvit": ("Models, configs, files: what `import lookupvit` gives.", None),
    "lookupvit.models.warmstart": ("Warm starts from timm and big_vision ViTs; ViT -> LookupViT.", None),
    "lookupvit.models.convert": ("transformers ViViT checkpoints; image -> video inflation.", None),
    "lookupvit.models.serialization": ("Model files and hub-style folders.", None),
    "lookupvit.models.budget": ("The compressed grid for a compute budget.", None),
    "lookupvit.models.captioner": ("Caption decoder, frozen encoder, captioner.", None),
    "lookupvit.data.captions": (
        "COCO-format caption data and the offline layout-caption task.",
        ["read_coco_captions", "read_karpathy_split", "CaptionSet", "CaptionedImage", "CaptionImageDataset", "write_layout_captions", "layout_caption_paths", "read_layout_items"],
    ),
    "lookupvit.data.text": ("The word tokenizer.", None),
    "lookupvit.evaluation.accuracy": ("Accuracy of every head at every grid.", None),
    "lookupvit.evaluation.captions": ("CIDEr-D, BLEU, ROUGE-L.", None),
    "lookupvit.training.config": ("Training settings.", ["TrainConfig", "load_config"]),
    "lookupvit.training.engine": ("The training loop.", ["train", "load_initial_weights"]),
    "lookupvit.training.captioning": ("Decoder training on a frozen encoder; captioner files.", ["CaptionTrainConfig", "train_captioner", "load_captioner", "evaluate_captioner", "caption_images"]),
}


def public_names(module, chosen: list[str] | None) -> list[str]:
    if chosen is not None:
        return chosen
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return sorted(
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and (inspect.isfunction(value) or inspect.isclass(value)) and value.__module__ == module.__name__
    )


def signature(value) -> str:
    """The call signature as written in the source: annotations unquoted (they are strings under `from __future__ import annotations`)."""
    try:
        found = inspect.signature(value)
    except (TypeError, ValueError):
        return ""
    unquoted = [
        parameter.replace(annotation=inspect.Parameter.empty if parameter.annotation is inspect.Parameter.empty else _Written(parameter.annotation))
        for parameter in found.parameters.values()
    ]
    returns = found.return_annotation
    return str(found.replace(parameters=unquoted, return_annotation=returns if returns is inspect.Signature.empty else _Written(returns)))


class _Written:
    """An annotation that prints as its source text."""

    def __init__(self, annotation):
        self.text = annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)

    def __repr__(self) -> str:
        return self.text


def describe(name: str, value) -> list[str]:
    kind = "class" if inspect.isclass(value) else "def"
    lines = [f"#### `{kind} {name}{signature(value)}`", ""]
    doc = inspect.getdoc(value)
    if doc and inspect.isclass(value) and doc.startswith(f"{value.__name__}("):
        doc = None  # the signature dataclasses write as a docstring says nothing the heading does not
    lines += [doc if doc else "(no docstring)", ""]
    if inspect.isclass(value):
        for method_name, method in vars(value).items():
            if method_name.startswith("_") or not callable(method) or not getattr(method, "__doc__", None):
                continue
            lines += [f"- `{method_name}{signature(method)}`: {inspect.getdoc(method).splitlines()[0]}"]
        lines.append("")
    return lines


def reference() -> str:
    lines = ["# API reference", "", "Generated from the docstrings by `python scripts/api_reference.py`; do not edit by hand.", ""]
    for module_name, (purpose, chosen) in MODULES.items():
        module = importlib.import_module(module_name)
        lines += [f"## `{module_name}`", "", purpose, ""]
        for name in public_names(module, chosen):
            value = getattr(module, name)
            if inspect.isfunction(value) or inspect.isclass(value):
                lines += describe(name, value)
    return "\n".join(lines).rstrip() + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/api.md differs from what the docstrings give")
    args = parser.parse_args()
    text = reference()
    if args.check:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is stale: run python scripts/api_reference.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT} ({len(text.splitlines())} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
