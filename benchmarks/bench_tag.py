"""Batch tagging throughput and memory: prints figures, asserts nothing.

    python benchmarks/bench_tag.py --rows 100000 --model models/default --checkpoint runs/base/checkpoint
    python benchmarks/bench_tag.py --rows 2000 --rss-rows 2000,5000 --model /tmp/tiny-bundle   # smoke check

Measures, on the same generated conversations:
1. `kefu-router tag` machinery (kefu_router.tagging.tag_file: read, context, ONNX, route, write), rows/s and
   customer messages/s; and the bare Predictor on the same messages;
2. a `transformers` Pipeline over the PyTorch checkpoint the bundle was exported from (same weights, same
   encoded inputs via kefu_router.text.encode), with the ratio; skipped with a note without --checkpoint;
3. Spark local[2] through kefu_router.spark.tag_spark (session start-up excluded);
4. peak RSS (VmHWM, else ru_maxrss) of a fresh process tagging --rss-rows rows each, plus one tagging a single row.

Rows are synthetic by default (no data files are read): conversations of 2-14 turns, customer and agent,
with a length mix from pings (在吗) to long complaints; `--texts FILE` samples message texts from a file
(one per line, or JSON Lines with a "text" field) instead.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PINGS = ["在吗", "在不在", "好的", "嗯嗯", "谢谢", "人呢", "亲", "好的谢谢", "收到", "？？", "快点", "ok"]
CLAUSES = [
    "这件衣服有M码吗", "什么时候能发货", "能便宜一点吗", "快递怎么还没到", "我要申请退货", "质量也太差了吧", "是正品吗",
    "做工怎么样", "尺码偏大还是偏小", "可以开发票吗", "我昨天下的单", "地址填错了能改吗", "优惠券用不了", "客服怎么一直不回",
    "物流三天没更新了", "收到的颜色不对", "第一次在你们家买", "老客户了给个优惠吧", "还在犹豫要不要买", "和另一款比哪个好",
    "明天就要用急死了", "再不处理我就投诉了", "包装都破了", "申请退款好几天了还没到账", "能不能加急发顺丰", "赠品怎么没有",
    "订单号是{order}", "电话{phone}", "我穿165斤应该选什么码", "面料起球吗", "洗了会不会缩水", "满减活动还有吗",
]
AGENT = [
    "亲，在的呢", "亲，帮您查询一下", "您好，请提供一下订单号", "非常抱歉给您带来不便", "亲，今天下午五点前会发出哦",
    "这款是纯棉面料，做工很好的", "亲，建议您选大一码", "已经为您登记退货，请耐心等待", "运费险会在签收后理赔到账",
    "这边帮您联系快递核实一下，请稍等", "目前店铺有满二百减二十的活动", "亲，我们家都是正品，支持专柜验货",
]


def make_text(rng: random.Random, pool: list[str] | None) -> str:
    if pool:
        return rng.choice(pool)
    kind = rng.random()
    if kind < 0.3:
        return rng.choice(PINGS)
    clauses = rng.randint(1, 2) if kind < 0.8 else rng.randint(3, 6)
    text = "，".join(rng.choice(CLAUSES) for _ in range(clauses))
    return text.format(order=rng.randint(10**15, 10**16), phone=f"1{rng.randint(3, 9)}{rng.randint(10**8, 10**9 - 1)}")


def generate(path: Path, n_rows: int, seed: int = 0, texts: list[str] | None = None) -> dict:
    """Write n_rows chat turns as JSON Lines; returns counts and the text length mix."""
    rng, rows, conv, lengths = random.Random(seed), 0, 0, []
    with path.open("w", encoding="utf-8") as fh:
        while rows < n_rows:
            conv += 1
            for turn in range(min(rng.randint(2, 14), n_rows - rows)):
                customer = turn == 0 or rng.random() < 0.6
                text = make_text(rng, texts) if customer else rng.choice(AGENT)
                lengths.append(len(text))
                row = {"id": f"r{rows}", "conversation_id": f"c{conv}", "turn": turn, "role": "customer" if customer else "agent", "text": text}
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                rows += 1
    lengths.sort()
    return {"rows": rows, "conversations": conv, "chars_p50": lengths[len(lengths) // 2], "chars_p90": lengths[int(len(lengths) * 0.9)], "chars_max": lengths[-1]}


def load_texts(path: Path) -> list[str]:
    texts = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        text = json.loads(line).get("text") if line.startswith("{") else line
        if isinstance(text, str) and text.strip():
            texts.append(text.strip())
    if not texts:
        sys.exit(f"error: no texts in {path}")
    return texts


def customer_messages(path: Path, max_turns: int) -> list:
    """The customer turns with their context, as kefu-router tag builds them (rows are in conversation order)."""
    from kefu_router.text import Message

    messages, turns, current = [], [], None
    for line in path.open(encoding="utf-8"):
        row = json.loads(line)
        if row["conversation_id"] != current:
            turns, current = [], row["conversation_id"]
        if row["role"] == "customer":
            messages.append(Message.of(row["text"], turns[-max_turns:] if max_turns else ()))
        turns.append((row["role"], row["text"]))
    return messages


def bench_tag(source: Path, work: Path, args) -> dict:
    from kefu_router.tagging import ColumnNames, tag_file

    columns = ColumnNames("text", "conversation_id", "role", "turn")
    start = time.perf_counter()
    summary = tag_file(source, work / "tagged.jsonl", columns=columns, model=args.model, batch_size=args.batch_size,
                       chunk_size=args.chunk_size, overwrite=True, progress=False)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "rows_per_s": summary.rows / seconds, "messages_per_s": summary.tagged / seconds, "messages": summary.tagged}


def bench_predictor(messages: list, args) -> dict:
    from kefu_router.predictor import Predictor

    predictor = Predictor(args.model, batch_size=args.batch_size)
    start, predictions = time.perf_counter(), []
    for i in range(0, len(messages), args.chunk_size):  # in chunks, as tag_file calls it
        predictions += predictor.predict(messages[i : i + args.chunk_size])
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "messages_per_s": len(messages) / seconds, "precision": predictor.precision, "predictions": predictions}


def report_pipeline(baseline: dict | str, rates: dict[str, float]) -> None:
    """Print the pipeline's figures (or why it was skipped) and each of `rates` (messages/s) as a ratio to it."""
    if isinstance(baseline, str):
        print(f"transformers pipeline: {baseline}")
        return
    print(f"transformers pipeline       {baseline['messages_per_s']:9.1f} messages/s  (PyTorch fp32, {baseline['messages']} messages, "
          f"{baseline['seconds']:.1f}s, {baseline['torch_threads']} threads; emotion+intent labels equal to the ONNX bundle's on "
          f"{baseline['agreement']:.1%})")
    print("ratio: " + "; ".join(f"{name} / pipeline = {rate / baseline['messages_per_s']:.2f}x" for name, rate in rates.items()))


def bench_pipeline(messages: list, args, onnx_predictions: list[dict]) -> dict | str:
    """A transformers Pipeline on the PyTorch weights, fed the same encoded inputs."""
    if not args.checkpoint:
        return "skipped: pass --checkpoint DIR (the HF checkpoint the bundle was exported from) to compare with transformers"
    checkpoint = Path(args.checkpoint)
    checkpoint = checkpoint / "checkpoint" if (checkpoint / "checkpoint" / "config.json").is_file() else checkpoint
    if not (checkpoint / "config.json").is_file():
        return f"skipped: {checkpoint} is not an HF checkpoint (no config.json)"
    try:
        import torch
        from transformers import AutoTokenizer, Pipeline

        from kefu_router.training.model import load_model
    except ImportError as exc:
        return f"skipped: the transformers baseline needs the train extra ({exc})"
    from kefu_router.bundle import load_bundle
    from kefu_router.predictor import format_prediction, sigmoid, softmax
    from kefu_router.labels import CUSTOMER_TYPE, HEADS
    from kefu_router.text import encode, prepare_tokenizer
    import numpy as np

    bundle = load_bundle(args.model)
    thresholds = np.array([bundle.thresholds[t] for t in CUSTOMER_TYPE.labels], dtype=np.float32)
    hf_tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    backend = prepare_tokenizer(hf_tokenizer.backend_tokenizer)

    class KefuPipeline(Pipeline):
        def _sanitize_parameters(self, **kwargs):
            return {}, {}, {}

        def preprocess(self, message):
            ids, types = encode(backend, [message], bundle.max_length, bundle.max_context_turns)[0]
            return {"input_ids": torch.tensor([ids]), "token_type_ids": torch.tensor([types]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long)}

        def _forward(self, inputs):
            return self.model(**inputs)

        def postprocess(self, outputs):
            probs = {h.name: (sigmoid if h.multi_label else softmax)(outputs[h.name][0].float().numpy()) for h in HEADS}
            return format_prediction(probs, thresholds)

    model = load_model(str(checkpoint)).eval()
    pipe = KefuPipeline(model=model, tokenizer=hf_tokenizer, device=torch.device("cpu"))
    limit = messages[: args.baseline_limit] if args.baseline_limit else messages
    start = time.perf_counter()
    with torch.inference_mode():
        outputs = list(pipe(limit, batch_size=args.batch_size))
    seconds = time.perf_counter() - start
    same = sum(o["emotion"]["label"] == p["emotion"]["label"] and o["intent"]["label"] == p["intent"]["label"] for o, p in zip(outputs, onnx_predictions))
    return {"seconds": seconds, "messages_per_s": len(limit) / seconds, "messages": len(limit), "torch_threads": torch.get_num_threads(),
            "agreement": same / max(len(limit), 1)}


def bench_spark(source: Path, args) -> dict | str:
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        return "skipped: pyspark is not installed (pip install 'kefu-router[spark]')"
    from kefu_router.spark import tag_spark

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    start = time.perf_counter()
    spark = SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false").config("spark.sql.shuffle.partitions", "2").getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    startup = time.perf_counter() - start
    try:
        df = spark.read.json(str(source)).cache()
        rows = df.count()
        tagged = tag_spark(df, "text", "conversation_id", "role", "turn", model=args.model, batch_size=args.batch_size)
        start = time.perf_counter()
        tagged.write.format("noop").mode("overwrite").save()
        seconds = time.perf_counter() - start
    finally:
        spark.stop()
    return {"rows": rows, "seconds": seconds, "rows_per_s": rows / seconds, "session_start_s": startup}


RSS_CHILD = """
import json, resource, sys, time
from kefu_router.tagging import ColumnNames, tag_file
start = time.perf_counter()
s = tag_file(sys.argv[1], sys.argv[2], columns=ColumnNames("text", "conversation_id", "role", "turn"), model=sys.argv[3] or None,
             batch_size=int(sys.argv[4]), chunk_size=int(sys.argv[5]), overwrite=True, progress=False, no_text=True)
try:  # VmHWM: ru_maxrss survives fork+exec on Linux, so it would report the parent's peak if that was larger
    peak_kb = int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1])
except OSError:
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"rows": s.rows, "seconds": time.perf_counter() - start, "max_rss_mb": peak_kb / 1024}))
"""


def bench_rss(n_rows: int, work: Path, args, texts) -> dict:
    source = work / f"rss-{n_rows}.jsonl"
    generate(source, n_rows, seed=n_rows, texts=texts)
    cmd = [sys.executable, "-c", RSS_CHILD, str(source), str(work / f"rss-{n_rows}.parquet"), str(args.model or ""), str(args.batch_size), str(args.chunk_size)]
    result = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
    source.unlink()
    (work / f"rss-{n_rows}.parquet").unlink(missing_ok=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--model", default=None, help="bundle directory (default: $KEFU_ROUTER_MODEL or the bundled model)")
    parser.add_argument("--checkpoint", default=None, help="HF checkpoint (or train run dir) the bundle was exported from")
    parser.add_argument("--texts", type=Path, default=None, help="sample message texts from this file instead of generating them")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--chunk-size", type=int, default=10_000)
    parser.add_argument("--baseline-limit", type=int, default=None, help="time the transformers pipeline on the first N messages only")
    parser.add_argument("--spark-rows", type=int, default=None, help="rows for the Spark run (default: --rows; 0 skips it)")
    parser.add_argument("--rss-rows", default="100000,1000000", help="comma-separated sizes for the peak-RSS runs ('' skips them)")
    args = parser.parse_args()

    from kefu_router.bundle import load_bundle

    bundle = load_bundle(args.model)
    texts = load_texts(args.texts) if args.texts else None
    print(f"model {bundle.path} version {bundle.version}; cpu cores {os.cpu_count()}; batch {args.batch_size}; chunk {args.chunk_size}")
    with tempfile.TemporaryDirectory(prefix="bench-tag-") as tmp:
        work = Path(tmp)
        source = work / "chats.jsonl"
        mix = generate(source, args.rows, texts=texts)
        print(f"data: {mix['rows']} rows in {mix['conversations']} conversations; text chars p50 {mix['chars_p50']} p90 {mix['chars_p90']} max {mix['chars_max']}"
              + (f"; texts from {args.texts}" if texts else "; synthetic texts"))
        tag = bench_tag(source, work, args)
        print(f"kefu-router tag   {tag['rows_per_s']:9.1f} rows/s {tag['messages_per_s']:9.1f} messages/s  ({tag['messages']} messages, {tag['seconds']:.1f}s; read+context+ONNX+route+write)")
        messages = customer_messages(source, bundle.max_context_turns)
        bare = bench_predictor(messages, args)
        print(f"Predictor only    {'':16} {bare['messages_per_s']:9.1f} messages/s  (ONNX {bare['precision']}, {bare['seconds']:.1f}s)")
        baseline = bench_pipeline(messages, args, bare.pop("predictions"))
        report_pipeline(baseline, {"kefu-router tag": tag["messages_per_s"], "Predictor": bare["messages_per_s"]})
        spark_rows = args.rows if args.spark_rows is None else args.spark_rows
        if spark_rows:
            spark_source = source if spark_rows == args.rows else work / "spark.jsonl"
            if spark_source != source:
                generate(spark_source, spark_rows, texts=texts)
            result = bench_spark(spark_source, args)
            print(f"Spark local[2]: {result}" if isinstance(result, str) else
                  f"Spark local[2]    {result['rows_per_s']:9.1f} rows/s  ({result['rows']} rows, {result['seconds']:.1f}s; session start {result['session_start_s']:.1f}s not counted)")
        sizes = [int(s) for s in args.rss_rows.split(",") if s.strip()]
        if sizes:
            for n in [1, *sizes]:
                r = bench_rss(n, work, args, texts)
                print(f"peak RSS {n:>9} rows: {r['max_rss_mb']:7.0f} MiB  ({r['seconds']:.0f}s, {r['rows'] / r['seconds']:.0f} rows/s, fresh process, Parquet out, --no-text)")
    print(f"parent process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB (includes the generated message list and the baseline model)")


if __name__ == "__main__":
    main()
