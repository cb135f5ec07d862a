"""Connected components of the identifier graph (int_identity_edges).

Why a Python model with scipy instead of recursive SQL: a recursive CTE (or
iterative label propagation) needs as many passes as the longest path in the
graph and re-joins the whole edge list each pass; its cost is O(E * diameter)
and a single long chain makes it blow up. ``scipy.sparse.csgraph.
connected_components`` is a linear-time O(V + E) graph traversal in C: a
couple of seconds for ~10 M nodes / edges at 1 M customers, with no iteration
count to tune. Node keys are turned into integers by a DuckDB hash aggregate
and joins (also linear, on every core), so no Python loop touches a row.

Output: one row per node (node, component_id). component_id is only a label
for this build; the stable customer_id is derived from the component's
members in int_identities_resolved.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

# Node keys -> integers, done by DuckDB (a parallel hash aggregate and two hash
# joins): Arrow's single-threaded dictionary_encode over the ~22 M edge ends of
# 1 M customers took 7 s; this takes about 4.5 s.
_ENCODE_NODES = """
    create or replace temp table _identity_nodes as
    select node, (row_number() over ()) - 1 as node_index
    from (
        select src_node as node from _identity_edges
        union
        select dst_node from _identity_edges
    )
"""
_ENCODE_EDGES = """
    select src.node_index as src_index, dst.node_index as dst_index
    from _identity_edges as edges
    inner join _identity_nodes as src on edges.src_node = src.node
    inner join _identity_nodes as dst on edges.dst_node = dst.node
"""


def model(dbt: Any, session: Any) -> Any:
    dbt.config(materialized="table")

    dbt.ref("int_identity_edges").create_view("_identity_edges", replace=True)
    session.execute(_ENCODE_NODES)
    (n_nodes,) = session.execute("select count(*) from _identity_nodes").fetchone()
    encoded = session.execute(_ENCODE_EDGES).fetchnumpy()
    src = np.asarray(encoded["src_index"], dtype=np.int64)
    dst = np.asarray(encoded["dst_index"], dtype=np.int64)

    graph = coo_matrix(
        (np.ones(len(src), dtype=np.int8), (src, dst)), shape=(n_nodes, n_nodes)
    ).tocsr()
    # Weak connectivity of the directed edge list is exactly the undirected
    # components, without scipy first symmetrising the matrix (~30 % faster).
    _, labels = connected_components(
        graph, directed=True, connection="weak", return_labels=True
    )

    component_labels = pa.table(
        {
            "node_index": pa.array(np.arange(n_nodes, dtype=np.int64)),
            "component_id": pa.array(labels.astype(np.int64)),
        }
    )
    session.register("_identity_component_labels", component_labels)
    return session.sql(
        """
        select nodes.node, labels.component_id
        from _identity_nodes as nodes
        inner join _identity_component_labels as labels
            on nodes.node_index = labels.node_index
        """
    )
