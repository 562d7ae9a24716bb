"""Stage records as tests need them, built the one way."""

from pipelines.core.records import Candidate, Selection


def selection(selected: str, **val_macro_f1: float) -> Selection:
    """A selection among candidates named classical or search_* (classical family) and
    onnx_* (transformers), with these val macro-F1s; a refused INT8 left out."""

    def candidate(name: str, f1: float) -> Candidate:
        family = "transformer" if name.startswith("onnx_") else "classical"
        return Candidate(
            family=family,
            file=f"models/{name}.onnx",
            tokenizer=None,
            val_macro_f1=f1,
            val_macro_f1_ci95=(f1 - 0.05, f1 + 0.05),
            val_accuracy=f1,
            latency_ms_p95_b1=1.0,
            size_mb=1.0,
            within_budgets=True,
            tied_with_best=name == selected,
        )

    return Selection(
        family="any",
        selected=selected,
        reason="the best on val",
        val_texts=185,
        budgets={},
        candidates={name: candidate(name, f1) for name, f1 in val_macro_f1.items()},
        excluded={"onnx_int8": "refused by quantize's gate: INT8 labels 9 of 185 val texts differently"},
    )
