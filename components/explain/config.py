"""Params of explanation: attribution cost, what the report shows, calibration bins and
the faithfulness check. Plain pydantic and nothing else, so reading `params.yaml` never
imports torch, Captum or scikit-learn."""

from pydantic import BaseModel, ConfigDict, Field


class Attribution(BaseModel):
    """How Integrated Gradients runs. A registered version explains its texts with these
    defaults (the served model and `kiln explain` load the version alone, not params.yaml),
    so they keep one; params.yaml's explain section must agree (tests/unit/pipelines/test_core_params.py)."""

    model_config = ConfigDict(extra="forbid")

    # Gauss-Legendre quadrature (Captum's default) converges in far fewer steps than a
    # Riemann sum; components/explain/transformer.py has the measured errors and costs
    # (~140 ms a 256-token text at 8 steps for the 1-layer, 128-wide student, one core).
    n_steps: int = Field(8, ge=2, le=512, description="Integrated Gradients steps from the [PAD] baseline to a text")
    max_delta: float = Field(
        0.02,
        gt=0,
        description="largest |convergence error| / |score - base| accepted; texts "
        "above it are attributed again with 4 times the steps",
    )
    batch_size: int = Field(
        8, ge=1, description="texts attributed together (each costs n_steps forward and backward passes)"
    )


class ExplainConfig(Attribution):
    """The explain section: attribution, what the report shows, calibration bins and the
    faithfulness check."""

    max_texts: int = Field(
        ge=1,
        description="test texts attributed for the report: beyond, a seeded sample (a transformer's texts cost "
        "~140 ms each on one core); calibration still uses them all",
    )
    top_words: int = Field(ge=1, description="words listed per class in the report")
    max_misclassified: int = Field(
        ge=0, description="misclassified test texts shown in the report, most confident first"
    )
    confusions: int = Field(ge=1, description="most frequent (true, predicted) pairs listed in the report")
    # 15 equal-width bins, as in Guo et al. (2017), "On Calibration of Modern Neural Networks".
    ece_bins: int = Field(ge=2, le=100, description="equal-width confidence bins of ECE and the reliability diagram")
    aopc_k: int = Field(ge=1, le=50, description="AOPC deletes the top 1..aopc_k words of each text")
    aopc_texts: int = Field(
        ge=1,
        description="test texts (the first ones) AOPC is measured on: each costs "
        "1 + aopc_k * (1 + random_draws) predictions",
    )
    random_draws: int = Field(ge=1, description="random deletion orders per text, averaged, for AOPC's baseline")
    seed: int
