"""Tag a Spark DataFrame of chats: `tag_spark(df, ...)`, for when one machine is not enough.

    from kefu_router.spark import tag_spark
    tagged = tag_spark(chats, text_col="text", conversation_col="conversation_id",
                       role_col="role", order_col="turn", model="/models/kefu-v1")
    tagged.write.parquet("tagged/")

How it works. Context needs a conversation's turns together and in order, so
with a conversation column the rows are `repartition`ed by conversation id and
`sortWithinPartitions` by (conversation id, order column); without an order
column the rows' order as read (`monotonically_increasing_id`) stands in for it.
`mapInPandas` then runs `kefu_router.tagging.Tagger` over each partition's
Arrow batches in turn, so context and each conversation's running route state
(O(window) per turn, kefu_router.routing.ConversationState) carry across
batches exactly as in `kefu-router tag`. Every Python worker process loads
the model once (an ONNX session cached per process and reused by all its
tasks); `threads=1` gives each task slot one ONNX thread, as Spark gives it
one core.

Output: the input columns (without the text column when `no_text=True`), the
`tag_*` columns of `kefu_router.tagging.TAG_COLUMNS` and `tag_error` (the reason
a row could not be tagged, else null). No row is dropped; filter on `tag_error`.
Agent turns (with `role_col`) keep empty tags.

Requirements: pyspark and pandas (`pip install 'kefu-router[spark]'`),
kefu-router installed on every executor, the bundle at the same path on every
executor (or shipped with `SparkContext.addFile` and passed as
`SparkFiles.get(...)`), and PYSPARK_PYTHON pointing at that Python. Left out:
conversations too long for one partition's memory are not split, and no
`tag_line` column is added (Spark rows have no file line).
"""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING, Iterator

from kefu_router.bundle import load_bundle, resolve_bundle_path
from kefu_router.tagging import DEFAULT_MAX_OPEN_CONVERSATIONS, EMPTY_TAGS, TAG_COLUMNS, TAG_TYPES, ColumnNames, Tagger, column_problem

if TYPE_CHECKING:
    import pandas

ERROR_COLUMN = "tag_error"
_SEQ_COLUMN = "_kefu_router_seq"
_PREDICTORS: dict[tuple, object] = {}  # per Python worker process: one ONNX session per model
_ROUTERS: dict[str | None, object] = {}


def _spark_type(arrow_type):
    import pyarrow as pa
    from pyspark.sql import types as T

    if pa.types.is_list(arrow_type):
        return T.ArrayType(_spark_type(arrow_type.value_type))
    return {pa.string(): T.StringType(), pa.float64(): T.DoubleType(), pa.bool_(): T.BooleanType()}[arrow_type]


def cached_predictor(model: str, precision: str = "int8", batch_size: int = 64, threads: int | None = 1):
    """The process's Predictor for these settings, created on first use."""
    from kefu_router.predictor import Predictor

    key = (model, precision, batch_size, threads)
    if key not in _PREDICTORS:
        _PREDICTORS[key] = Predictor(model, precision=precision, batch_size=batch_size, threads=threads)
    return _PREDICTORS[key]


def _cached_router(playbooks: str | None, review_below: float | None = None):
    from kefu_router.routing import Router

    if (playbooks, review_below) not in _ROUTERS:
        _ROUTERS[(playbooks, review_below)] = Router(playbooks, review_below=review_below)
    return _ROUTERS[(playbooks, review_below)]


def tag_batches(
    batches: Iterator["pandas.DataFrame"],
    *,
    columns: ColumnNames,
    model: str,
    precision: str = "int8",
    batch_size: int = 64,
    threads: int | None = 1,
    playbooks: str | None = None,
    no_text: bool = False,
    max_open_conversations: int = DEFAULT_MAX_OPEN_CONVERSATIONS,
) -> Iterator["pandas.DataFrame"]:
    """The mapInPandas function: one partition's batches in, the same rows with tag columns out."""
    import pandas as pd

    predictor = cached_predictor(model, precision, batch_size, threads)
    tagger = Tagger(predictor, _cached_router(playbooks, predictor.bundle.review_below), columns, max_open_conversations)
    drop = [c for c in (columns.text if no_text else None, _SEQ_COLUMN) if c]
    for frame in batches:
        results = tagger.tag(frame.to_dict("records"))
        tags = pd.DataFrame.from_records([r if isinstance(r, dict) else EMPTY_TAGS for r in results], columns=list(TAG_COLUMNS), index=frame.index)
        out = pd.concat([frame.drop(columns=[c for c in drop if c in frame.columns]), tags], axis=1)
        out[ERROR_COLUMN] = [None if isinstance(r, dict) else f"{r.code}: {r}" for r in results]
        yield out


def tag_spark(
    df,
    text_col: str = "text",
    conversation_col: str | None = None,
    role_col: str | None = None,
    order_col: str | None = None,
    model: str | os.PathLike | None = None,
    *,
    no_text: bool = False,
    precision: str = "int8",
    batch_size: int = 64,
    threads: int | None = 1,
    num_partitions: int | None = None,
    playbooks: str | os.PathLike | None = None,
    max_open_conversations: int = DEFAULT_MAX_OPEN_CONVERSATIONS,
):
    """Tag `df` lazily: returns a DataFrame with the tag columns (see the module docstring).

    `model` defaults to $KEFU_ROUTER_MODEL or the bundled model and is checked on the
    driver first; `num_partitions` defaults to the session's shuffle partitions.
    """
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    columns = ColumnNames(text_col, conversation_col, role_col, order_col)
    problem = column_problem(list(df.columns), columns, reserved=ERROR_COLUMN)
    if problem:
        raise ValueError(f"DataFrame: {problem}")
    bundle = load_bundle(model)  # fail on the driver, not in every task
    model_path = str(resolve_bundle_path(bundle.path).resolve())
    if conversation_col:
        order = order_col
        if order is None:
            df, order = df.withColumn(_SEQ_COLUMN, F.monotonically_increasing_id()), _SEQ_COLUMN
        parts = (num_partitions,) if num_partitions else ()
        df = df.repartition(*parts, conversation_col).sortWithinPartitions(conversation_col, order)
    kept = [f for f in df.schema.fields if f.name != _SEQ_COLUMN and not (no_text and f.name == text_col)]
    schema = T.StructType(
        kept + [T.StructField(name, _spark_type(t)) for name, t in TAG_TYPES.items()] + [T.StructField(ERROR_COLUMN, T.StringType())]
    )
    worker = functools.partial(
        tag_batches, columns=columns, model=model_path, precision=precision, batch_size=batch_size, threads=threads,
        playbooks=str(playbooks) if playbooks else None, no_text=no_text, max_open_conversations=max_open_conversations,
    )
    return df.mapInPandas(worker, schema)
