"""Kiln's training components on whatever accelerator is present (`accelerator: auto`).

Runs the pretrain recipe (masked LM) and the finetune recipe (classifier) from
`components/` alone, on the split and tokenizer a pipeline run left behind, and prints
the device Lightning chose, tokens/s and val macro-F1. Needs no MLflow, Prefect or DVC,
so it also runs on a bare GPU machine:

    python benchmarks/gpu_check.py --precision bf16-mixed --devices 1
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lightning as L  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from transformers import BertForMaskedLM  # noqa: E402

from components.text.classifier import MeanPoolClassifier  # noqa: E402
from components.text.config import EncoderConfig, HardwareConfig, LoopConfig, OptimConfig  # noqa: E402
from components.text.data import ClassificationData, MaskedLMData, label_map, load_tokenizer  # noqa: E402
from components.text.model import bert_config  # noqa: E402
from components.text.modules import Classifier, MaskedLM  # noqa: E402
from components.text.training import build_trainer  # noqa: E402


class Throughput(L.Callback):
    def __init__(self, tokens_per_batch: int):
        self.tokens = tokens_per_batch
        self.start, self.steps = None, 0

    def on_train_batch_start(self, trainer, *_):
        if trainer.global_step == 5 and self.start is None:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, *_):
        if self.start is not None:
            self.steps += 1

    def rate(self) -> float:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return self.steps * self.tokens / (time.perf_counter() - self.start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--devices", default="auto")
    parser.add_argument("--strategy", default="auto")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    args = parser.parse_args()
    devices = int(args.devices) if args.devices.isdigit() else args.devices
    hardware = HardwareConfig(accelerator="auto", devices=devices, strategy=args.strategy, precision=args.precision)
    split = {n: pd.read_parquet(ROOT / f"data/split/{n}.parquet") for n in ("train", "val", "test")}
    tokenizer = load_tokenizer(ROOT / "models/tokenizer.json", "gpu_check")
    encoder = EncoderConfig(
        layers=args.layers, hidden=args.hidden, heads=args.hidden // 64, intermediate=4 * args.hidden, max_length=128
    )
    batch = 32
    with tempfile.TemporaryDirectory() as tmp:
        L.seed_everything(0, verbose=False)
        model = BertForMaskedLM(bert_config(encoder, len(tokenizer), tokenizer.pad_token_id))
        data = MaskedLMData(
            split["train"]["text"].tolist(), split["val"]["text"].tolist(), tokenizer, 128, batch, 0.15, 0, 1024
        )
        loop = LoopConfig(
            max_epochs=100,
            max_steps=args.steps,
            batch_size=batch,
            val_every_steps=args.steps,
            checkpoint_every=10**6,
            log_every=50,
        )
        trainer = build_trainer("gpu_check pretrain", hardware, loop, Path(tmp) / "mlm", [])
        meter = Throughput(batch * 128)
        trainer.callbacks.append(meter)
        trainer.fit(MaskedLM(model, OptimConfig(lr=5e-4), {}), datamodule=data)
        name = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
        print(
            f"device: {trainer.strategy.root_device} ({name}), strategy {type(trainer.strategy).__name__}, "
            f"precision {trainer.precision}, world size {trainer.world_size}"
        )
        print(f"pretrain: {meter.rate():.0f} tokens/s, val/loss {float(trainer.callback_metrics['val/loss']):.3f}")

        labels = label_map(split["train"]["label"])
        config = bert_config(encoder, len(tokenizer), tokenizer.pad_token_id, num_labels=len(labels))
        classifier = MeanPoolClassifier(config)
        classifier.bert.load_state_dict(model.bert.state_dict())
        cdata = ClassificationData(split, labels, tokenizer, 128, batch, 0)
        loop = LoopConfig(max_epochs=4, batch_size=batch, checkpoint_every=10**6, log_every=50)
        trainer = build_trainer("gpu_check finetune", hardware, loop, Path(tmp) / "cls", [])
        module = Classifier(classifier, OptimConfig(lr=5e-4), {}, len(labels))
        trainer.fit(module, datamodule=cdata)
        print(f"finetune: val/macro_f1 {float(trainer.callback_metrics['val/macro_f1']):.4f} after 4 epochs")


if __name__ == "__main__":
    main()
