"""Baseline for the ML scenarios: Python onnxruntime on the same model file, same texts, same threads.

    python3 loadtest/ort_baseline.py [--threads 1] [--texts 320]

Needs `onnxruntime==1.32.0` and `tokenizers` (models/train/requirements.txt has both). Prints single-text
p50/p95 (one text per run, as the service does) and texts/s, as one JSON line.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "models", "train"))
from preprocess import preprocess  # noqa: E402

TEXTS = [
    "Thanks, the support team solved my problem in minutes!",
    "My order arrived late and the box was damaged.",
    "Can you tell me when the store opens on Sunday?",
    "Terrible experience, I was on hold for an hour.",
    "Love the new app update, checkout is so much faster.",
    "I'd like to change the delivery address for order 1234.",
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--texts", type=int, default=320)
    args = ap.parse_args()
    root = os.path.join(os.path.dirname(__file__), "..", "models")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    session = ort.InferenceSession(os.path.join(root, "sentiment-minilm-v1.onnx"), opts, providers=["CPUExecutionProvider"])
    tok = Tokenizer.from_file(os.path.join(root, "tokenizer.json"))
    texts = [preprocess(TEXTS[i % len(TEXTS)]) for i in range(args.texts)]
    latencies = []
    started = time.perf_counter()
    for t in texts:
        enc = tok.encode(t)
        ids = np.array([enc.ids], dtype=np.int64)
        mask = np.ones_like(ids)
        t0 = time.perf_counter()
        session.run(["probs"], {"input_ids": ids, "attention_mask": mask})
        latencies.append((time.perf_counter() - t0) * 1000)
    total = time.perf_counter() - started
    latencies.sort()
    pct = lambda p: round(latencies[min(len(latencies) - 1, int(len(latencies) * p))], 2)  # noqa: E731
    print(json.dumps({"runtime": "python onnxruntime " + ort.__version__, "threads": args.threads, "texts": len(texts),
                      "textsPerSec": round(len(texts) / total), "p50Ms": pct(0.5), "p95Ms": pct(0.95)}))


if __name__ == "__main__":
    main()
