"""Scores the golden file's token ids with the Python ONNX Runtime on this machine: the reference the
Rust port must match exactly (tests/api/ml.rs). Prints one JSON list of [positive, negative, neutral]."""

import json
import sys

import numpy as np
import onnxruntime as ort

model, golden = sys.argv[1], sys.argv[2]
options = ort.SessionOptions()
options.intra_op_num_threads = 1
session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
out = []
for item in json.load(open(golden))["items"]:
    ids = np.array([item["input_ids"]], dtype=np.int64)
    probs = session.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0][0]
    out.append([float(p) for p in probs])
print(json.dumps(out))
