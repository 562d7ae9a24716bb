"""Every metric name Kiln logs, and what it means: one table for the stages (the executor
refuses a name that is not here), the README (its metrics table is this one) and the tests.

Names are `scope/metric`: the scope is a split (`val`, `test`), a model variant, or the
stage's own subject (`data`, `split`, `tokenizer`). A name means the same thing in every
stage that logs it, so runs compare side by side in the MLflow UI.
"""

import re

# The models evaluate compares, by variant name.
VARIANTS = ("teacher", "student", "pruned", "onnx_fp32", "onnx_int8", "onnx_teacher", "classical")
OPS = ("delete", "swap", "insert", "mask")

TABLE: dict[str, str] = {
    "data/rows": "rows of the dataset: read by ingest, checked by validate",
    "data/classes": "distinct labels ingested",
    "data/sources": "distinct sources ingested (the base dataset and each batch)",
    "pii/rows_with_pii": "rows where personal data was found (ingest.pii)",
    "pii/rows_dropped": "rows dropped for it (ingest.pii.policy: drop)",
    "pii/{entity}": "findings of one kind of personal data (EMAIL, PHONE, ... and your own patterns)",
    "pii/{column}/{entity}": "the same, in one column",
    "data/valid_rows": "rows that passed validation",
    "data/quarantined_rows": "rows set aside by validate.policy: quarantine",
    "data/duplicate_rows": "rows whose exact text an earlier row already has",
    "data/failed_expectations": "expectations of the suite that failed",
    "data/duplicates_dropped": "exact duplicates the split stage dropped",
    "data/conflicts_dropped": "rows of texts that carry two different labels, dropped",
    "split/{split}_rows": "rows of the train, val or test split",
    "unlabeled/rows_read": "rows read from data/unlabeled/",
    "unlabeled/rows": "unlabelled texts kept for distill's transfer set",
    "unlabeled/invalid_dropped": "missing or blank texts, or texts outside validate's length bounds",
    "unlabeled/duplicates_dropped": "copies of an unlabelled text kept once",
    "unlabeled/in_splits_dropped": "unlabelled texts also in train, val or test, left out",
    "unlabeled/rows_with_pii": "unlabelled texts where personal data was found (masked as ingest.pii says)",
    "augment/rows": "augmented copies written",
    "augment/{op}": "augmented copies made by one operation",
    "augment/skipped": "training texts too short to augment",
    "tokenizer/vocab_size": "WordPiece vocabulary, special tokens included",
    "tokenizer/unk_rate": "share of [UNK] among the train split's tokens",
    "tokenizer/tokens_per_text": "mean tokens per train text",
    "tokenizer/tokens_p95": "95th percentile of tokens per train text, [CLS] and [SEP] included",
    "model/max_length": "tokens per sequence the model reads, chosen from the data unless set",
    "train/windows": "token windows masked-LM pretraining trains on",
    "train/texts": "train texts those windows are cut from (pretrain.max_texts bounds them)",
    "train/examples": "texts a classifier trains on: its train rows plus their augmented copies",
    "train/labelled": "labelled train rows among a student's examples, copies aside (distill.max_rows bounds them)",
    "train/unlabeled": "unlabelled texts among a student's examples, learned from the teacher's answers alone",
    "train/steps": "optimizer steps taken",
    "train/lr": "peak learning rate of the classifier (finetune: optim.lr, or pretrained_lr from a pretrained start)",
    "start/pieces_per_word": "pretrain.init auto: word pieces a train word under the checkpoint's vocabulary",
    "start/unknown_share": "pretrain.init auto: share of [UNK] among those pieces",
    "start/pretrained": "pretrain.init auto: 1 if the encoder started from the checkpoint, 0 if from scratch",
    "train/loss": "training loss (logged by Lightning as it trains)",
    "train/lr_step/{group}": "learning rate at each step as the schedule set it (warm-up, then linear decay); pg1 the "
    "weight-decayed matrices, pg2 biases and norms (logged by Lightning's LearningRateMonitor)",
    "train/hidden_loss": "hidden-state matching loss of distillation",
    "val/loss": "validation loss",
    "val/perplexity": "masked-LM perplexity on val windows",
    "val/perplexity_start": "the same, of a pretrained checkpoint before pretrain's steps on your texts",
    "val/unigram_perplexity": "the same, of predicting each masked token by its train frequency alone: what an "
    "encoder that learned nothing about context scores",
    "{split}/macro_f1": "macro-averaged F1 of the stage's model on val or test",
    "{split}/accuracy": "accuracy of the stage's model on val or test",
    "val/majority_macro_f1": "val macro-F1 of the majority-class predictor (always the commonest train label): "
    "what a model that learned nothing scores",
    "val/delta_macro_f1_vs_majority": "the stage's model's val macro-F1 minus the majority predictor's, on the "
    "same texts",
    "val/delta_macro_f1_vs_majority_{end}": "ends of the paired-bootstrap 95 % interval of that difference",
    "val/learned": "1 if that interval's lower end is above 0; 0: the model learned nothing (select leaves such a "
    "candidate out)",
    "model/params": "parameters of the stage's model",
    "model/params_non_embedding": "parameters outside the embedding tables (what pruning shrinks)",
    "model/vocab_size": "tokens the student's embedding table holds (distill.inherit: the teacher's, cut to the "
    "tokens the train texts use)",
    "model/params_non_embedding_before": "the same, before pruning",
    "ablation/{rival}_{split}_macro_f1": "val or test macro-F1 of the teacher's rival in finetune.ablation: the "
    "same classifier from scratch (scratch) or finetuned from the checkpoint without pretrain's adaptive steps "
    "(unadapted)",
    "ablation/{rival}_val_gain": "the teacher's val macro-F1 minus that rival's, on the same texts",
    "ablation/{rival}_val_gain_{end}": "ends of the paired-bootstrap 95 % interval of that difference",
    "ablation/pretraining_gain": "test macro-F1 gained by starting from the pretrained encoder",
    "teacher/test_macro_f1": "the teacher's test macro-F1, beside its student's",
    "student/test_macro_f1": "the unpruned student's test macro-F1, beside the pruned one's",
    "test/macro_f1_retention": "test macro-F1 as a share of the model it was made from",
    "prune/curve_val_macro_f1": "val macro-F1 at each sparsity of the curve, before recovery (step = ratio %)",
    "prune/val_macro_f1_before_recovery": "val macro-F1 right after pruning",
    "prune/non_embedding_reduction": "share of non-embedding parameters removed",
    "export/parity_texts": "held-out texts the export parity gate compared",
    "onnx_{model}/max_abs_diff": "largest |logit difference| (classical: probability) between an ONNX file and "
    "the model it was exported from",
    "onnx_{model}/parity_agreement": "share of labels an ONNX file and the model it was exported from agree on",
    "onnx_{model}/size_mb": "size of an ONNX file",
    "onnx_int8/passed": "1 if INT8 passed quantize's gate on val; 0: refused, and not a candidate of select",
    "onnx_int8/val_agreement": "share of val predictions INT8 shares with FP32",
    "onnx_int8/val_macro_f1_drop": "val macro-F1 lost by quantization",
    "onnx_int8/val_allowed_disagreements": "val texts quantize's gate let INT8 label differently from FP32 "
    "(quantize.min_agreement, and at least one)",
    "onnx_int8/val_allowed_f1_drop": "val macro-F1 loss quantize's gate allowed (quantize.max_f1_drop, and at "
    "least what one changed prediction can cost)",
    "onnx_int8/size_ratio": "FP32 size over INT8 size",
    "{variant}/test_macro_f1": "test macro-F1 of a model variant",
    "{variant}/test_accuracy": "test accuracy of a model variant",
    "{variant}/latency_ms_{pct}_{batch}": "latency percentile (p50, p95) of one call at batch 1 or 32",
    "{variant}/throughput_b32": "texts per second at batch 32",
    "{variant}/test_macro_f1_{end}": "lower or upper end of the 95 % bootstrap interval of a variant's test macro-F1",
    "{variant}/val_macro_f1": "val macro-F1 of a candidate, as the select stage measured it (and quantize, for "
    "its FP32 and INT8 files)",
    "{variant}/val_macro_f1_{end}": "lower or upper end of its 95 % bootstrap interval",
    "classical/val_accuracy": "val accuracy of the classical model's chosen grid point",
    "classical/features": "n-grams the classical model keeps",
    "classical/params": "its parameters: coefficients, intercepts and vocabulary entries",
    "classical/grid_points": "grid points fitted and scored on val",
    "classical/grid_s": "seconds the grid took",
    "search/trials": "trials the search study finished (complete or failed; those a kill cut off not counted)",
    "search/complete": "trials that made, checked and measured a model",
    "search/failed": "trials that failed (a parity gate, a model that could not train), each with its reason",
    "search/front": "trials on the Pareto front of val macro-F1, p50 batch-1 latency and size",
    "search/candidates": "models on their own family's front: select's candidates from the search",
    "search/requeued": "trials a killed search left running, asked again with the same params",
    "search/best_val_macro_f1": "the best val macro-F1 of any trial",
    "trial/latency_ms_p50_b1": "a search trial's p50 batch-1 latency (ms) of its file (logged on the trial's run)",
    "trial/size_mb": "a search trial's file size (logged on the trial's run)",
    "trial/seconds": "a search trial's wall time on its worker (logged on the trial's run)",
    "selected_vs_{other}/delta_macro_f1": "the selected candidate's test macro-F1 minus another's, on the same "
    "texts: the teacher's, or its baseline's (evaluation.json's `baseline`), named after the baseline's family",
    "selected_vs_{other}/ci_{end}": "ends of the paired-bootstrap 95 % interval of that difference",
    "selected_vs_{other}/p_value": "exact McNemar p-value of the two on the same texts",
    "selected_vs_{other}/discordant": "test texts exactly one of the two gets right",
    "selected/val_macro_f1": "val macro-F1 of the candidate select chose",
    "selected/val_macro_f1_{end}": "its 95 % interval",
    "selected/test_macro_f1": "test macro-F1 of the candidate select chose",
    "selected/test_macro_f1_{end}": "its 95 % interval",
    "selected/test_accuracy": "its test accuracy",
    "selected/size_mb": "size of the candidate select chose, MB",
    "selected/latency_ms_p50_b1": "its median latency at batch 1, ms",
    "explain/aopc_top": "mean drop of the predicted label's probability after deleting the top k attributed words",
    "explain/aopc_random": "the same after deleting k random words: the baseline top-k deletion must beat",
    "explain/ece": "expected calibration error of the shipped model on test",
    "explain/temperature": "what serving divides logits by (1: temperature scaling did not lower val ECE)",
    "{variant}/size_mb": "size of a model variant on disk",
    "{variant}/params": "parameters (ONNX: values stored in its initializers)",
    "int8_vs_teacher/delta_macro_f1": "INT8's test macro-F1 minus the teacher's, on the same texts",
    "int8_vs_teacher/ci_{end}": "ends of the paired-bootstrap 95 % interval of that difference",
    "int8_vs_teacher/p_value": "exact McNemar p-value of the two on the same texts",
    "int8_vs_teacher/discordant": "test texts exactly one of the two gets right",
    "int8_vs_teacher/size_ratio": "size of the teacher's FP32 ONNX file over INT8's",
    "int8_vs_teacher/latency_ratio_p50_b1": "p50 batch-1 latency of the teacher's FP32 ONNX file over INT8's",
    "int8_vs_teacher/macro_f1_retention": "INT8 test macro-F1 as a share of the teacher's",
    "int8_vs_fp32/speedup_p50_{batch}": "FP32 p50 latency over INT8's, at batch 1 or 32",
    "registered/version": "the registry version the run registered",
    "{side}/test_macro_f1": "challenger or champion re-scored on today's test split by the gate",
    "{side}/test_macro_f1_{end}": "ends of its 95 % bootstrap interval",
    "gate/delta_macro_f1": "champion minus challenger test macro-F1, on the same texts",
    "gate/ci_{end}": "ends of the paired-bootstrap 95 % interval of that difference",
    "gate/p_value": "exact McNemar p-value of challenger against champion",
    "gate/discordant": "test texts exactly one of the two gets right",
    "gate/floor": "the macro-F1 floor the challenger was held to",
    "{side}/test_accuracy": "the same, accuracy",
    "{side}/latency_ms_{pct}_{batch}": "the same, latency",
    "{side}/throughput_b32": "the same, throughput",
    "{side}/size_mb": "the same, model size",
    "promote/promoted": "1 if the gate moved champion to this run's version",
    "time/stage_s": "seconds the stage's own work took",
    "system/{system}": "the machine while the stage ran, every 10 s (MLflow's system metrics: CPU, memory, disk, "
    "network, and GPU where there is one)",
}

_SLOTS = {
    "split": "train|val|test",
    "op": "|".join(OPS),
    # A model of the search's front is a candidate too: search_<trial>.
    "variant": "|".join(VARIANTS) + r"|search_\d+",
    "model": "fp32|int8|teacher|classical",
    "pct": "p50|p95",
    "batch": "b1|b32",
    "side": "challenger|champion",
    "end": "lo|hi",
    "entity": "[A-Z][A-Z0-9_]*",
    "column": "[A-Za-z0-9_]+",
    "other": "classical|transformer|teacher",
    "rival": "scratch|unadapted",
    "group": "pg1|pg2",
    "system": "[a-z0-9_]+",
}
_PATTERNS = [
    re.compile("^" + re.sub(r"\\\{(\w+)\\\}", lambda m: f"(?:{_SLOTS[m.group(1)]})", re.escape(name)) + "$")
    for name in TABLE
]

# What a stage's one result line shows.
HEADLINE = {
    "ingest": ("data/rows", "data/classes"),
    "validate": ("data/valid_rows", "data/quarantined_rows"),
    "split": ("split/train_rows", "split/val_rows", "split/test_rows"),
    "unlabeled": ("unlabeled/rows", "unlabeled/in_splits_dropped"),
    "augment": ("augment/rows", "augment/skipped"),
    "tokenize": ("tokenizer/vocab_size", "tokenizer/tokens_p95"),
    "pretrain": ("val/perplexity", "model/max_length"),
    "finetune": ("val/macro_f1", "test/macro_f1"),
    "distill": ("val/macro_f1", "test/macro_f1"),
    "prune": ("val/macro_f1", "prune/non_embedding_reduction"),
    "export": ("onnx_fp32/max_abs_diff", "onnx_fp32/size_mb"),
    "quantize": ("onnx_int8/passed", "onnx_int8/val_agreement", "onnx_int8/size_mb"),
    "classical": ("classical/val_macro_f1", "onnx_classical/size_mb"),
    "search": ("search/trials", "search/front"),
    "select": (),
    "evaluate": ("selected/test_macro_f1",),
    "register": ("registered/version",),
}


# What the pipeline's parent run shows of its stages' metrics: the figures of the model it
# made, so that two pipeline runs compare side by side.
_PIPELINE = re.compile(r"^(selected/.*|promote/promoted)$")


def pipeline_level(name: str) -> bool:
    return bool(_PIPELINE.match(name))


def known(name: str) -> bool:
    return any(pattern.match(name) for pattern in _PATTERNS)


def unknown(names) -> list[str]:
    return sorted(name for name in names if not known(name))


def headline(stage: str, metrics: dict[str, float]) -> str:
    shown = [(key, metrics[key]) for key in HEADLINE.get(stage, ()) if key in metrics]
    return "  ".join(f"{key} {_figure(value)}" for key, value in shown)


def _figure(value: float) -> str:
    """Counts whole (22250, not 2.225e+04); scores and sizes to four significant digits."""
    return str(int(value)) if float(value).is_integer() else f"{value:.4g}"


def markdown() -> str:
    """The table as the README shows it."""
    rows = ["| metric | meaning |", "| --- | --- |"]
    rows += [f"| `{name}` | {meaning} |" for name, meaning in TABLE.items()]
    return "\n".join(rows) + "\n"
