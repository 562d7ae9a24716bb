"""An explainer from what a registered version keeps beside its ONNX file: the PyTorch
model folder it was exported from (transformer family) or the classical model's weights
as JSON, never a pickle."""

import json
from pathlib import Path

from components.errors import KilnError
from components.explain.config import Attribution


def load_explainer(source: Path, labels: list[str], cfg: Attribution | None = None):
    """A TransformerExplainer for a model folder, a LinearExplainer for an explainer.json;
    `cfg` is params.yaml's explain section where a stage has it."""
    cfg = cfg or Attribution()
    if source.is_file():
        from components.explain.linear import LinearExplainer

        try:
            data = json.loads(source.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise KilnError(f"explainer {source} cannot be read ({err})") from None
        return LinearExplainer.from_dict(data, str(source))
    from components.explain.transformer import TransformerExplainer
    from components.text.classifier import MeanPoolClassifier

    try:
        model = MeanPoolClassifier.from_pretrained(source)
    except Exception as err:  # noqa: BLE001 - transformers raises many types for a broken folder
        raise KilnError(f"explainer model {source} cannot be loaded ({err})") from None
    return TransformerExplainer(model, source / "tokenizer.json", labels, cfg.n_steps, cfg.max_delta, cfg.batch_size)


class LazyExplainer:
    """A registered version's explainer, loaded on the first texts it explains and kept:
    serving pays nothing for it until asked, and a batch loads it once."""

    def __init__(self, source: Path | None, classifier):
        self.source = source
        self.classifier = classifier
        self.explainer = None

    def explain(self, texts: object) -> list:
        if self.source is None:
            raise KilnError("this version was registered without an explainer")
        if self.explainer is None:
            self.explainer = load_explainer(self.source, self.classifier.labels)
        return self.explainer.explain(self.classifier.check(texts))
