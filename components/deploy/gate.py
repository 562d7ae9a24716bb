"""The promotion gate: may a challenger replace the champion? Every check is reported,
passed or not, so the decision explains itself."""

from dataclasses import dataclass

from components.deploy.config import GateConfig



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


def decide(cfg: GateConfig, challenger: dict[str, float], champion_f1: float | None,
           export_parity: bool, quantize_parity: bool, validation: bool) -> Decision:
    """`challenger` holds macro_f1, latency_ms_p95_b1 and size_mb on the current test
    split; `champion_f1` is the champion re-scored on that same split (None: no champion,
    and the floors alone decide)."""
    f1 = challenger["macro_f1"]
    checks = []
    if champion_f1 is None:
        checks.append(Check("champion", True, "no champion yet; the floors decide"))
    else:
        checks.append(Check("vs_champion", f1 >= champion_f1 - cfg.tolerance,
                            f"macro-F1 {f1:.4f} vs champion {champion_f1:.4f} (tolerance {cfg.tolerance})"))
    checks += [
        Check("f1_floor", f1 >= cfg.min_macro_f1, f"macro-F1 {f1:.4f} vs floor {cfg.min_macro_f1}"),
        Check("latency", challenger["latency_ms_p95_b1"] <= cfg.max_latency_ms_p95_b1,
              f"p95 batch-1 latency {challenger['latency_ms_p95_b1']:.2f} ms vs budget {cfg.max_latency_ms_p95_b1} ms"),
        Check("size", challenger["size_mb"] <= cfg.max_size_mb,
              f"size {challenger['size_mb']:.2f} MB vs budget {cfg.max_size_mb} MB"),
        Check("export_parity", export_parity, "ONNX matches PyTorch" if export_parity else "ONNX parity not passed"),
        Check("quantize_parity", quantize_parity,
              "INT8 matches FP32" if quantize_parity else "INT8 parity not passed"),
        Check("data_validation", validation, "validation passed" if validation else "validation did not pass"),
    ]
    return Decision(checks)
