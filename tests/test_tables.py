"""Table digests hash content: writer, compression and row groups do not matter; values, names and order do."""

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from selfimprove.store.tables import table_digest, write_table

GOLDEN = "sha256:2c1c0ef083c5b1479e5dcd935fa9839956b016939be5d0232274578a93b94277"


def frame():
    return pd.DataFrame({"b": [1, 2], "a": ["x", "y"],
                         "t": pd.to_datetime(["2024-05-01T00:00:00Z", "2024-05-02T00:00:00Z"])})


def test_golden_table_digest_is_writer_independent(tmp_path):
    df = frame()
    write_table(tmp_path / "ours.parquet", df)
    df.to_parquet(tmp_path / "pandas_gzip.parquet", compression="gzip", index=False)
    pq.write_table(pa.Table.from_pandas(df[["t", "a", "b"]], preserve_index=False), tmp_path / "arrow.parquet",
                   compression="none", row_group_size=1)
    for name in ("ours", "pandas_gzip", "arrow"):
        assert table_digest(tmp_path / f"{name}.parquet") == (GOLDEN, 2)


def test_values_names_and_order_matter(tmp_path):
    base = frame()
    variants = {
        "value": base.assign(b=[1, 3]),
        "name": base.rename(columns={"a": "A"}),
        "order": base.iloc[::-1],
    }
    digests = set()
    for name, df in variants.items():
        write_table(tmp_path / f"{name}.parquet", df)
        digests.add(table_digest(tmp_path / f"{name}.parquet")[0])
    assert GOLDEN not in digests and len(digests) == 3


def test_nan_and_null_stay_distinct(tmp_path):
    nan = pa.table({"x": pa.array([1.0, float("nan")], from_pandas=False)})
    null = pa.table({"x": pa.array([1.0, None])})
    write_table(tmp_path / "nan.parquet", nan)
    write_table(tmp_path / "null.parquet", null)
    assert table_digest(tmp_path / "nan.parquet") != table_digest(tmp_path / "null.parquet")
