"""tag_spark on local[2]: same tags as `kefu-router tag`, context grouped by conversation, nothing dropped."""

from __future__ import annotations

import os
import random
import shutil
import sys

import pytest

from kefu_router.tagging import TAG_COLUMNS, ColumnNames, tag_file
from tests.conftest import MINI_DATA
from tests.test_tagging import CONV, MINI_ROWS, RecordingPredictor, interleaved, read_rows, write_rows

pd = pytest.importorskip("pandas")
FIELDS = ("id", "conversation_id", "turn", "role", "text")


def chat_rows(copies: int = 3) -> list[dict]:
    rows = []
    for k in range(copies):
        rows += [{f: r[f] for f in FIELDS} | {"id": f"{r['id']}#{k}", "conversation_id": f"{r['conversation_id']}#{k}"} for r in MINI_ROWS]
    return interleaved(rows)


def test_tag_batches_carries_context_across_arrow_batches(tiny_bundle):
    """The mapInPandas function on one sorted partition split into small batches (no Spark needed)."""
    from kefu_router import spark as kspark
    from kefu_router.predictor import Predictor
    from kefu_router.training.data import load_examples

    recorder = RecordingPredictor(Predictor(tiny_bundle))
    kspark._PREDICTORS[(str(tiny_bundle), "int8", 64, 1)] = recorder
    try:
        frame = pd.DataFrame(MINI_ROWS)  # one partition, already sorted by conversation and turn
        batches = (frame.iloc[i : i + 4] for i in range(0, len(frame), 4))
        out = pd.concat(kspark.tag_batches(batches, columns=CONV, model=str(tiny_bundle)))
    finally:
        kspark._PREDICTORS.clear()
    examples, _ = load_examples(MINI_DATA)
    max_turns = recorder.bundle.max_context_turns
    assert [(m.text, m.context) for m in recorder.seen] == [(e.text, e.context[-max_turns:]) for e in examples]
    assert len(out) == len(MINI_ROWS) and out["tag_emotion"].notna().sum() == len(examples)


@pytest.fixture(scope="module")
def spark():
    pytest.importorskip("pyspark")
    if not shutil.which("java") and not os.environ.get("JAVA_HOME"):
        pytest.skip("Spark needs Java 17")
    from pyspark.sql import SparkSession

    os.environ["PYSPARK_PYTHON"] = sys.executable  # workers run this interpreter, with kefu-router installed
    session = (
        SparkSession.builder.master("local[2]").appName("kefu-router-tests")
        .config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "3")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", "16").getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def test_tag_spark_matches_file_tagging_with_conversation_context(spark, tiny_bundle, tmp_path):
    """Shuffled rows come back grouped and ordered: fp32 scores equal the file tagger's on the ordered file."""
    from kefu_router.predictor import Predictor
    from kefu_router.spark import tag_spark

    rows = chat_rows()
    shuffled = rows[:]
    random.Random(7).shuffle(shuffled)
    df = spark.createDataFrame(pd.DataFrame(shuffled)).repartition(4)
    result = tag_spark(df, "text", "conversation_id", "role", "turn", model=tiny_bundle, precision="fp32")
    got = {r["id"]: r for r in (row.asDict() for row in result.collect())}
    assert len(got) == len(rows) and result.columns[-1] == "tag_error"

    fp32 = Predictor(tiny_bundle, precision="fp32")
    tag_file(write_rows(tmp_path / "in.jsonl", rows), tmp_path / "with.jsonl", columns=CONV, predictor=fp32)
    tag_file(tmp_path / "in.jsonl", tmp_path / "without.jsonl", columns=ColumnNames("text", None, "role"), predictor=fp32)
    score_columns = [c for c in TAG_COLUMNS if c.startswith("tag_score_")]
    worst_with = worst_without = 0.0
    for want, alone in zip(read_rows(tmp_path / "with.jsonl"), read_rows(tmp_path / "without.jsonl")):
        row = got[want["id"]]
        assert row["tag_error"] is None and row["tag_playbook"] == want["tag_playbook"], want["id"]
        assert (row["tag_emotion"] is None) == (want["role"] == "agent")
        if want["tag_emotion"] is not None:
            worst_with = max(worst_with, *(abs(row[c] - want[c]) for c in score_columns))
            worst_without = max(worst_without, *(abs(row[c] - alone[c]) for c in score_columns))
    assert worst_with <= 1e-4
    assert worst_without >= 3e-4  # context changes the scores, so a grouping mistake would show above


def test_tag_spark_keeps_rejected_rows_and_can_drop_text(spark, tiny_bundle):
    from kefu_router.spark import tag_spark

    df = spark.createDataFrame(
        [("a", "c1", "在吗"), ("b", "c1", None), ("c", "c1", "快递到哪了"), ("d", None, "   ")], "id string, conv string, text string"
    )
    rows = {r["id"]: r.asDict() for r in tag_spark(df, conversation_col="conv", model=tiny_bundle, no_text=True).collect()}
    assert set(rows) == {"a", "b", "c", "d"} and "text" not in rows["a"]
    assert rows["b"]["tag_error"].startswith("no_text") and rows["d"]["tag_error"].startswith("no_text")
    assert rows["a"]["tag_error"] is None and rows["c"]["tag_emotion"] and rows["c"]["tag_model_version"] == "tiny-test"
    with pytest.raises(ValueError, match="no column 'msg'"):
        tag_spark(df, text_col="msg", model=tiny_bundle)
