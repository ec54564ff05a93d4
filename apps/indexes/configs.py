"""What a user may set on an index build, typed (pydantic; no Django, no faiss): the API's
body shows each field with its bounds; ``workers.ml.indexing.IndexSpec`` checks the rules
between fields (pca_dim ≤ dim, pq_m divides the dimension) when the service builds the spec."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

IndexTypeName = Literal["flat", "hnsw", "ivf_flat", "ivf_pq", "sq8", "binary", "binary_hnsw"]


class IndexParams(BaseModel):
    """Build parameters; a field left out takes its default (``null``: automatic)."""

    model_config = ConfigDict(extra="forbid")

    dim: int | None = Field(None, ge=1, description="Matryoshka: keep the first dim dimensions")
    pca_dim: int | None = Field(None, ge=1, description="PCA to this many dimensions")
    hnsw_m: int | None = Field(None, ge=2, le=256, description="HNSW: links per node (32)")
    ef_construction: int | None = Field(None, ge=1, description="HNSW: build beam (200)")
    ef_search: int | None = Field(None, ge=1, description="HNSW: search beam (64)")
    nlist: int | None = Field(None, ge=1, description="IVF: lists (null: about 4·√n)")
    nprobe: int | None = Field(None, ge=1, description="IVF: lists searched (16)")
    pq_m: int | None = Field(None, ge=1, description="PQ: sub-quantizers (null: about dim/8)")
    pq_nbits: int | None = Field(None, ge=1, le=16, description="PQ: bits per code (8)")
    train_size: int | None = Field(None, ge=1, description="training sample (50,000)")
    rescore: int | None = Field(None, ge=0, description="binary: re-score k × rescore (4)")
    seed: int | None = Field(None, ge=0, le=2**31 - 1)

    def given(self) -> dict:
        return self.model_dump(exclude_none=True)
