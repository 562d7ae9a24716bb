"""The promotion gate: may a challenger replace the champion? Every check is reported,
passed or not, so the decision explains itself.

The parity checks are decided here from what export and quantize measured (recorded on
the registered version), against today's bounds: a version whose measurements are
missing, or outside the bounds, fails them.
"""

import math
from dataclasses import dataclass

from components.deploy.config import ExportConfig, GateConfig, QuantizeConfig
from components.stats import Comparison


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class Decision:
    checks: list[Check]

    @property
    def promote(self) -> bool:
        return all(check.passed for check in self.checks)

    @property
    def reasons(self) -> list[str]:
        return [f"{'pass' if c.passed else 'FAIL'} {c.name}: {c.detail}" for c in self.checks]


@dataclass(frozen=True)
class Tolerance:
    """What the INT8 gate allows on a split of `texts` texts: quantize's bounds, widened
    to one text where they ask for less than one text can show (on 185 texts, 0.5 points
    of macro-F1 is finer than the 0.54 a single changed prediction costs)."""

    texts: int
    disagreements: int  # texts INT8 may label differently from FP32
    f1_drop: float  # macro-F1 INT8 may lose
    disagreements_why: str
    f1_drop_why: str

    def admits(self, differing: int, drop: float) -> bool:
        # The slack: a drop of exactly one text's cost, computed two ways, may differ in its last bits.
        return differing <= self.disagreements and drop <= self.f1_drop + 1e-9

    def verdict(self, differing: int, drop: float, split: str) -> str:
        return (
            f"INT8 labels {differing} of {self.texts} {split} texts differently from FP32 (allowed "
            f"{self.disagreements}: {self.disagreements_why}) and loses {drop * 100:.2f} macro-F1 points "
            f"(allowed {self.f1_drop * 100:.2f}: {self.f1_drop_why})"
        )


def int8_tolerance(cfg: QuantizeConfig, texts: int, one_text: float) -> Tolerance:
    """`cfg`'s bounds on `texts` texts, where one changed prediction costs at most
    `one_text` macro-F1 (`stats.one_text_loss` of FP32's predictions)."""
    # The epsilon keeps (1 - 0.9) * 10 at 1, not 0.9999999999999998.
    asked = math.floor((1 - cfg.min_agreement) * texts + 1e-9)
    agreement = f"quantize.min_agreement {cfg.min_agreement:g}"
    drop = f"quantize.max_f1_drop {cfg.max_f1_drop:g}"
    finer = "is finer than this split resolves"
    return Tolerance(
        texts,
        max(asked, 1),
        max(cfg.max_f1_drop, one_text),
        agreement if asked >= 1 else f"one text of {texts}; {agreement} {finer}",
        drop if cfg.max_f1_drop >= one_text else f"one text of {texts}; {drop} {finer}",
    )


@dataclass(frozen=True)
class Evidence:
    """What the stages before registration measured; None where nothing was recorded."""

    export_max_abs_diff: float | None
    export_agreement: float | None
    quantize_agreement: float | None
    quantize_f1_drop: float | None
    validation_passed: bool | None
    quantized: bool = True  # an FP32 or classical file has no INT8 parity to check
    # The val texts INT8 was compared on, and what one changed prediction could cost there:
    # None on versions registered before they were recorded, held to the bare bounds.
    quantize_texts: int | None = None
    quantize_one_text_f1: float | None = None

    # The tag names are those every version registered so far carries: they stay when a field is renamed.
    def to_tags(self) -> dict[str, str]:
        """The tags register records on a version for `from_tags`; what was not measured is left out."""
        tags = {
            "data.validation": {True: "passed", False: "failed"}.get(self.validation_passed),
            "gate.export_max_abs_diff": self.export_max_abs_diff,
            "gate.export_agreement": self.export_agreement,
            "gate.quantized": str(self.quantized).lower(),
            "gate.quantize_agreement": self.quantize_agreement,
            "gate.quantize_f1_drop": self.quantize_f1_drop,
            "gate.quantize_texts": self.quantize_texts,
            "gate.quantize_one_text_f1": self.quantize_one_text_f1,
        }
        return {name: str(value) for name, value in tags.items() if value is not None}

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> "Evidence":
        """A registered version's evidence; a tag missing or not a number is nothing recorded."""
        validation = tags.get("data.validation")
        texts = _number(tags, "gate.quantize_texts")
        return cls(
            export_max_abs_diff=_number(tags, "gate.export_max_abs_diff"),
            export_agreement=_number(tags, "gate.export_agreement"),
            quantize_agreement=_number(tags, "gate.quantize_agreement"),
            quantize_f1_drop=_number(tags, "gate.quantize_f1_drop"),
            validation_passed=None if validation is None else validation == "passed",
            # Versions registered before this tag existed were all INT8 files.
            quantized=tags.get("gate.quantized", "true") != "false",
            quantize_texts=None if texts is None else int(texts),
            quantize_one_text_f1=_number(tags, "gate.quantize_one_text_f1"),
        )


def _number(tags: dict[str, str], name: str) -> float | None:
    try:
        return float(tags[name])
    except (KeyError, ValueError):
        return None


def _parity(evidence: Evidence, export: ExportConfig, quantize: QuantizeConfig) -> list[Check]:
    e = evidence
    if e.export_max_abs_diff is None or e.export_agreement is None:
        exported = Check("export_parity", False, "no export parity measurement recorded on the version")
    else:
        exported = Check(
            "export_parity",
            e.export_max_abs_diff <= export.max_abs_diff and e.export_agreement == 1.0,
            f"max |logit difference| {e.export_max_abs_diff:.2e} (bound {export.max_abs_diff:.0e}), "
            f"labels agree on {e.export_agreement:.1%}",
        )
    if not e.quantized:
        quantized = Check("quantize_parity", True, "not quantized: no INT8 parity to check")
    elif e.quantize_agreement is None or e.quantize_f1_drop is None:
        quantized = Check("quantize_parity", False, "no INT8 parity measurement recorded on the version")
    elif e.quantize_texts is not None and e.quantize_one_text_f1 is not None:
        tolerance = int8_tolerance(quantize, e.quantize_texts, e.quantize_one_text_f1)
        differing = round((1 - e.quantize_agreement) * e.quantize_texts)
        quantized = Check(
            "quantize_parity",
            tolerance.admits(differing, e.quantize_f1_drop),
            tolerance.verdict(differing, e.quantize_f1_drop, "val"),
        )
    else:
        quantized = Check(
            "quantize_parity",
            e.quantize_agreement >= quantize.min_agreement and e.quantize_f1_drop <= quantize.max_f1_drop,
            f"INT8 agrees with FP32 on {e.quantize_agreement:.1%} (needs {quantize.min_agreement:.1%}), "
            f"loses {e.quantize_f1_drop * 100:.2f} macro-F1 points (allowed "
            f"{quantize.max_f1_drop * 100:.2f})",
        )
    validated = Check(
        "data_validation",
        bool(e.validation_passed),
        {True: "validation passed", False: "validation failed"}.get(
            e.validation_passed, "no validation result recorded"
        ),
    )
    return [exported, quantized, validated]


def decide(
    cfg: GateConfig,
    challenger: dict[str, float],
    versus: Comparison | None,
    floor: float,
    floor_source: str,
    evidence: Evidence,
    export: ExportConfig,
    quantize: QuantizeConfig,
) -> Decision:
    """`challenger` holds test_macro_f1 with its interval (test_macro_f1_lo/_hi),
    latency_ms_p95_b1 and size_mb on today's test split; `versus` is the champion against
    the challenger on the same texts (champion minus challenger; None: no champion, and
    the floors alone decide). The challenger may be worse than the champion only by less
    than `cfg.tolerance` at 95 % confidence: the upper end of the paired interval of the
    difference must be at most the tolerance, whatever the point estimate says."""
    f1 = challenger["test_macro_f1"]
    interval = f"[{challenger['test_macro_f1_lo']:.4f}, {challenger['test_macro_f1_hi']:.4f}]"
    checks = []
    if versus is None:
        checks.append(Check("champion", True, "no champion yet; the floors decide"))
    else:
        d = versus.macro_f1_difference
        checks.append(
            Check(
                "vs_champion",
                d.high <= cfg.tolerance,
                f"champion minus challenger macro-F1 {d.estimate:+.4f}, 95 % interval [{d.low:+.4f}, {d.high:+.4f}] "
                f"(its upper end must be at most the tolerance {cfg.tolerance}); McNemar p = {versus.mcnemar_p:.3g} "
                f"over {versus.discordant} texts only one of them gets right",
            )
        )
    checks += [
        Check("f1_floor", f1 >= floor, f"macro-F1 {f1:.4f} {interval} vs floor {floor:.4f} ({floor_source})"),
        Check(
            "latency",
            challenger["latency_ms_p95_b1"] <= cfg.max_latency_ms_p95_b1,
            f"p95 batch-1 latency {challenger['latency_ms_p95_b1']:.2f} ms vs budget {cfg.max_latency_ms_p95_b1} ms",
        ),
        Check(
            "size",
            challenger["size_mb"] <= cfg.max_size_mb,
            f"size {challenger['size_mb']:.2f} MB vs budget {cfg.max_size_mb} MB",
        ),
        *_parity(evidence, export, quantize),
    ]
    return Decision(checks)
