"""The promotion gate: may a challenger replace the champion? Every check is reported,
passed or not, so the decision explains itself.

The parity checks are decided here from what export and quantize measured (recorded on
the registered version), against today's bounds: a version whose measurements are
missing, or outside the bounds, fails them.
"""

from dataclasses import dataclass

from components.deploy.config import ExportConfig, GateConfig, QuantizeConfig


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
class Evidence:
    """What the stages before registration measured; None where nothing was recorded."""

    export_max_abs_diff: float | None
    export_agreement: float | None
    quantize_agreement: float | None
    quantize_f1_drop: float | None
    validation_passed: bool | None


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
    if e.quantize_agreement is None or e.quantize_f1_drop is None:
        quantized = Check("quantize_parity", False, "no INT8 parity measurement recorded on the version")
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
    champion_f1: float | None,
    evidence: Evidence,
    export: ExportConfig,
    quantize: QuantizeConfig,
) -> Decision:
    """`challenger` holds test_macro_f1, latency_ms_p95_b1 and size_mb on the current test
    split; `champion_f1` is the champion re-scored on that same split (None: no champion,
    and the floors alone decide)."""
    f1 = challenger["test_macro_f1"]
    checks = []
    if champion_f1 is None:
        checks.append(Check("champion", True, "no champion yet; the floors decide"))
    else:
        checks.append(
            Check(
                "vs_champion",
                f1 >= champion_f1 - cfg.tolerance,
                f"macro-F1 {f1:.4f} vs champion {champion_f1:.4f} (tolerance {cfg.tolerance})",
            )
        )
    checks += [
        Check("f1_floor", f1 >= cfg.min_macro_f1, f"macro-F1 {f1:.4f} vs floor {cfg.min_macro_f1}"),
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
