"""Per-minute unique users with DuckDB and Polars, for scripts/bench-vs-peers.sh.

Usage: python3 scripts/peers.py duckdb|polars FILE THREADS
Prints one JSON object per minute ({"start": unix_seconds, "unique_users": n}),
sorted by start, then the elapsed seconds on stderr as `elapsed=S`.
"""
import json
import sys
import time


def duckdb_counts(path, threads):
    import duckdb

    con = duckdb.connect()
    con.execute(f"SET threads TO {threads}")
    rows = con.execute(
        """
        SELECT (CAST(ts AS BIGINT) // 60) * 60 AS start, COUNT(DISTINCT uid) AS n
        FROM read_json(?, format = 'newline_delimited',
                       columns = {uid: 'VARCHAR', ts: 'VARCHAR'},
                       maximum_object_size = 16777216)
        GROUP BY 1 ORDER BY 1
        """,
        [path],
    ).fetchall()
    return rows


def polars_counts(path, threads):
    import os

    os.environ["POLARS_MAX_THREADS"] = str(threads)
    import polars as pl

    df = (
        pl.scan_ndjson(path, schema={"uid": pl.String, "ts": pl.Int64})
        .group_by((pl.col("ts") // 60 * 60).alias("start"))
        .agg(pl.col("uid").n_unique().alias("n"))
        .sort("start")
        .collect()
    )
    return list(df.iter_rows())


def main():
    engine, path, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    started = time.perf_counter()
    rows = {"duckdb": duckdb_counts, "polars": polars_counts}[engine](path, threads)
    elapsed = time.perf_counter() - started
    for start, n in rows:
        print(json.dumps({"start": int(start), "unique_users": int(n)}))
    print(f"elapsed={elapsed:.3f}", file=sys.stderr)


if __name__ == "__main__":
    main()
