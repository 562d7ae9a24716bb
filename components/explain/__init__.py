"""Explanations of predictions and errors: word attributions for both model families
(Integrated Gradients along the embeddings for the transformer, weight times value for the
linear model), calibration and temperature scaling, the faithfulness check (AOPC), the
HTML report and the terminal view. Nothing is imported here: `config` needs pydantic
alone, and only `transformer` imports torch and Captum."""
