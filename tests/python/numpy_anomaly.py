"""Computes the anomaly scores and flags of docs/functions.md with numpy,
straight from their definitions: the reference that the udfs cross-check
compares `anomaly_score`, `is_anomaly` and `detect_anomalies` against.

Usage: python numpy_anomaly.py CSV SETTINGS_JSON
CSV rows are g,t,x (x empty for NULL); SETTINGS_JSON is a list of
[method, k]. Prints {"method:k": {g: {t: [score, flag]}}} as JSON."""

import csv
import json
import sys
from collections import defaultdict

import numpy as np


def judge(xs, method, k):
    present = np.array([x for x in xs if x is not None], dtype=np.float64)
    if len(present) == 0:
        return [[None, None] for _ in xs]
    if method == "zscore":
        center, spread = present.mean(), present.std(ddof=0)
    elif method == "iqr":
        q1, q3 = np.percentile(present, [25, 75])
        center, spread = np.median(present), q3 - q1
    else:
        center = np.median(present)
        spread = np.median(np.abs(present - center))
    out = []
    for x in xs:
        if x is None:
            out.append([None, None])
        elif spread == 0:
            out.append([None, False])
        else:
            score = (x - center) / spread
            if method == "mad":
                score *= 0.6745
            if method == "iqr":
                flag = x < q1 - k * spread or x > q3 + k * spread
            else:
                flag = abs(score) > k
            out.append([float(score), bool(flag)])
    return out


def main() -> None:
    path, settings = sys.argv[1], json.loads(sys.argv[2])
    series = defaultdict(list)
    with open(path, newline="") as f:
        for g, t, x in csv.reader(f):
            series[g].append((int(t), float(x) if x != "" else None))
    out = {}
    for method, k in settings:
        per_group = {}
        for g, points in series.items():
            verdicts = judge([x for _, x in points], method, k)
            per_group[g] = {str(t): v for (t, _), v in zip(points, verdicts)}
        out[f"{method}:{k}"] = per_group
    print(json.dumps(out))


if __name__ == "__main__":
    main()
