"""Connected components of the identifier graph (int_identity_edges).

Why a Python model with scipy instead of recursive SQL: a recursive CTE (or
iterative label propagation) needs as many passes as the longest path in the
graph and re-joins the whole edge list each pass; its cost is O(E * diameter)
and a single long chain makes it blow up. ``scipy.sparse.csgraph.
connected_components`` is a linear-time O(V + E) graph traversal in C: a
couple of seconds for ~10 M nodes / edges at 1 M customers, with no iteration
count to tune. Node keys are turned into integers with Arrow's hash-based
dictionary encoding (also linear), so no Python loop touches a row.

Output: one row per node (node, component_id). component_id is only a label
for this build; the stable customer_id is derived from the component's
members in int_identities_resolved.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


def model(dbt: Any, session: Any) -> pa.Table:
    dbt.config(materialized="table")

    edges: pa.Table = dbt.ref("int_identity_edges").select("src_node, dst_node").fetch_arrow_table()
    n_edges = edges.num_rows
    both = (
        pa.chunked_array(edges.column("src_node").chunks + edges.column("dst_node").chunks)
        .cast(pa.large_string())
        .combine_chunks()
    )
    encoded = pc.dictionary_encode(both)
    nodes = encoded.dictionary
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    n_nodes = len(nodes)

    graph = coo_matrix(
        (np.ones(n_edges, dtype=np.int8), (codes[:n_edges], codes[n_edges:])),
        shape=(n_nodes, n_nodes),
    ).tocsr()
    _, labels = connected_components(graph, directed=False, return_labels=True)

    return pa.table(
        {
            "node": nodes,
            "component_id": pa.array(labels.astype(np.int64)),
        }
    )
