"""``FAMILY=NAME FAMILY.KEY=VALUE`` arguments of the commands that do not compose a Hydra config (index, rag)."""
import pytest

from plugformer.commands import component_nodes
from plugformer.errors import PlugformerError


def test_names_and_typed_options_become_config_nodes():
    rest, nodes = component_nodes("index build", ["retriever=faiss", "retriever.nlist=16", "out=idx",
                                                  "retriever.index=hnsw", "embedder.dim=[1, 2]"],
                                  ("embedder", "retriever"), defaults={"embedder": "wordllama"})
    assert rest == ["out=idx"]
    assert nodes == {"retriever": {"name": "faiss", "nlist": 16, "index": "hnsw"},
                     "embedder": {"name": "wordllama", "dim": [1, 2]}}


def test_none_drops_a_default_and_options_without_a_name_are_refused():
    _, nodes = component_nodes("x", ["embedder=none"], ("embedder",), defaults={"embedder": "wordllama"})
    assert nodes == {"embedder": None}
    with pytest.raises(PlugformerError, match=r"retriever.nlist is set but no retriever is chosen; add retriever=NAME"):
        component_nodes("x", ["retriever.nlist=4"], ("retriever",))
    with pytest.raises(PlugformerError, match="'retriever.nlist' given twice"):
        component_nodes("x", ["retriever=faiss", "retriever.nlist=4", "retriever.nlist=5"], ("retriever",))
    with pytest.raises(PlugformerError, match=r"retriever.nlist='\[1' is not a valid value"):
        component_nodes("x", ["retriever=faiss", "retriever.nlist=[1"], ("retriever",))
