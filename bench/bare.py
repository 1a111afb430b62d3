"""The bare reference: a raw ASGI callable doing the services' key lookup and ONNX call, nothing else.

No framework, no auth, no validation, no metrics: it stands for the limit of a
Python service on one core with the runtime's server stack (uvicorn + uvloop +
httptools + orjson + onnxruntime). Routes:

* ``POST /lookup`` ``{"data": {"customer_id": ...}}``: the demographics row;
* ``POST /score`` ``{"features": {"customer_id": ...}}``: demographics and
  behavior rows, age and tenure from the dates, one ONNX call;
* ``GET /readyz``.

Run with the project's venv: ``python bench/bare.py --data DIR --model FILE --port N``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import orjson
import uvicorn

_dumps, _loads = orjson.dumps, orjson.loads

AS_OF = dt.date(2026, 6, 30)
NUMERIC = ("age", "tenure_months", "orders_12m", "spend_12m", "avg_basket", "recency_days",
           "distinct_categories", "return_rate")
STRINGS = ("gender", "region", "campaign_status")
_JSON = [(b"content-type", b"application/json")]


def _columns(path: Path) -> dict[str, list]:
    from apinode.bundle import EncodedColumn, read_bundle

    columns = {}
    for name, column in read_bundle(path).items():
        values = column.decode() if isinstance(column, EncodedColumn) else column
        columns[name] = values.tolist()
    return columns


class Bare:
    """Everything loaded once; one dict probe and one session.run per request."""

    def __init__(self, data: Path, model: Path) -> None:
        from apinode.transforms import months_since

        demographics = _columns(data / "demographics.npz")
        behavior = _columns(data / "behavior.npz")
        self.row_of = {key: row for row, key in enumerate(demographics["customer_id"])}
        self.lookup_columns = [(name, values) for name, values in demographics.items() if name != "customer_id"]
        months = months_since(demographics["birthdate"], AS_OF)
        derived = {"age": (months // 12).tolist(), "tenure_months": months_since(demographics["signup_date"], AS_OF).tolist()}
        self.numeric = [(name, derived.get(name) or behavior[name]) for name in NUMERIC]
        self.strings = [(name, demographics[name]) for name in STRINGS]
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        # The same model call as the runtime's single-row path: pre-shaped [1, 1] inputs filled in
        # place and the session's C++ run called directly (no per-call input re-validation).
        self.outputs = [node.name for node in self.session.get_outputs()]
        self.numeric_inputs = [(values, np.zeros((1, 1), dtype=np.float32)) for _, values in self.numeric]
        self.string_inputs = [(values, np.zeros((1, 1), dtype=object)) for _, values in self.strings]
        self.feed = {name: array for (name, _), (_, array) in
                     zip(self.numeric + self.strings, self.numeric_inputs + self.string_inputs)}
        self.run = self.session._sess.run

    def lookup(self, body: bytes) -> dict:
        row = self.row_of[_loads(body)["data"]["customer_id"]]
        return {"results": [{"data": {name: values[row] for name, values in self.lookup_columns}}]}

    def score(self, body: bytes) -> dict:
        row = self.row_of[_loads(body)["features"]["customer_id"]]
        for values, array in self.numeric_inputs:
            array[0, 0] = values[row]
        for values, array in self.string_inputs:
            array[0, 0] = values[row]
        label, probabilities = self.run(self.outputs, self.feed, None)
        first, second = probabilities[0].tolist()
        return {"result": {"prediction": str(label.item(0)), "probas": {"0": first, "1": second}}}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        path = scope["path"]
        if path == "/lookup":
            payload = _dumps(self.lookup(body))
        elif path == "/score":
            payload = _dumps(self.score(body))
        else:
            payload = b'{"ready":true}'
        await send({"type": "http.response.start", "status": 200, "headers": _JSON})
        await send({"type": "http.response.body", "body": payload})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--runtime-path", type=Path, help="folder holding the apinode package")
    # Variants for measuring what each piece of the server stack buys (bench/main.py --ablation).
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--http", choices=("httptools", "h11"), default="httptools")
    parser.add_argument("--json", choices=("orjson", "stdlib"), default="orjson")
    args = parser.parse_args()
    if args.json == "stdlib":
        import json

        global _dumps, _loads
        _dumps, _loads = (lambda value: json.dumps(value).encode()), json.loads
    if args.runtime_path:
        sys.path.insert(0, str(args.runtime_path))
    app = Bare(args.data, args.model)
    uvicorn.run(app, host="127.0.0.1", port=args.port, loop=args.loop, http=args.http,
                access_log=False, log_level="warning", lifespan="off",
                proxy_headers=False, server_header=False, date_header=False)


if __name__ == "__main__":
    main()
