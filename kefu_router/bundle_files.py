"""Pydantic models of a bundle's JSON files, checked when the bundle loads (kefu_router.bundle).

Each model is strict: numbers must be JSON numbers (not strings or booleans), NaN and infinity
are refused, and unknown keys are refused where a typo would silently change behaviour
(schema heads, trait thresholds, temperatures). kefu_router.validation.problems turns a
ValidationError into one line that names every failing field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from kefu_router.labels import CUSTOMER_TYPE, EMOTION, HEADS, INTENT

BUNDLE_FORMAT = 1
STRICT = ConfigDict(strict=True, extra="forbid")

Probability = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
Temperature = Annotated[float, Field(gt=0.0, allow_inf_nan=False)]


class HeadSchema(BaseModel):
    """One head in schema.json: label ids in logit order, their Chinese names, its kind."""

    model_config = STRICT
    labels: list[str] = Field(min_length=1)
    zh: list[str]
    multi_label: bool

    @model_validator(mode="after")
    def _aligned(self) -> "HeadSchema":
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("labels repeat an id")
        if len(self.zh) != len(self.labels):
            raise ValueError(f"zh has {len(self.zh)} names for {len(self.labels)} labels")
        return self


# schema.json: one entry per head; thresholds.json: one threshold per trait, one temperature per softmax head at most.
SchemaFile = create_model("SchemaFile", __config__=STRICT, **{h.name: (HeadSchema, ...) for h in HEADS})
TraitThresholds = create_model("TraitThresholds", __config__=STRICT, **{t: (Probability, ...) for t in CUSTOMER_TYPE.labels})
Temperatures = create_model(
    "Temperatures", __config__=STRICT, **{h.name: (Optional[Temperature], None) for h in HEADS if not h.multi_label}
)


class ReviewThreshold(BaseModel):
    """thresholds.json `review` (optional): human review below this confidence, fitted on dev with its figures."""

    model_config = STRICT
    below: Probability
    flag_rate: Optional[Probability] = None
    precision: Optional[Probability] = None
    recall: Optional[Probability] = None
    dev_rows: Optional[Annotated[int, Field(ge=0)]] = None


class ThresholdsFile(BaseModel):
    model_config = STRICT
    customer_type: TraitThresholds  # type: ignore[valid-type]
    temperature: Temperatures = Field(default_factory=Temperatures)  # type: ignore[valid-type]
    review: Optional[ReviewThreshold] = None


Count = Annotated[int, Field(ge=0)]
NO_TRAIT = "(none)"  # customer_type: messages without any trait


class LabelDistribution(BaseModel):
    """metadata.json `label_distribution` (optional): label counts of the training data, the drift reference.

    customer_type counts trait mentions plus "(none)" for messages without a trait. Written by export
    from the run's train split; a label missing from a head's map counts 0.
    """

    model_config = STRICT
    source: str = Field(min_length=1, description="what was counted, e.g. 'train split, 1234 messages'")
    emotion: dict[Literal[EMOTION.labels], Count]  # type: ignore[valid-type]
    intent: dict[Literal[INTENT.labels], Count]  # type: ignore[valid-type]
    customer_type: dict[Literal[(*CUSTOMER_TYPE.labels, NO_TRAIT)], Count]  # type: ignore[valid-type]


class MetadataFile(BaseModel):
    """metadata.json: the fields the runtime reads are checked; export adds more (metrics, parity...), kept as they are."""

    model_config = ConfigDict(strict=True, extra="allow")
    format: Literal[BUNDLE_FORMAT]  # type: ignore[valid-type]
    version: str = Field(min_length=1)
    max_length: int = Field(ge=4)  # [CLS] [SEP] message [SEP]: at least one message token
    max_context_turns: int = Field(ge=0)
    schema_digest: Optional[str] = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    label_distribution: Optional[LabelDistribution] = None
