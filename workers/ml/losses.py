"""Losses that sentence-transformers does not ship: Starbucks (Zhuang et al., 2024).

Starbucks Representation Learning fine-tunes a 2D Matryoshka model on a *fixed* list of
(layer, dimension) pairs from small to large, e.g. for BERT-base (2, 32), (4, 64), (6, 128),
(8, 256), (10, 512), (12, 768), and computes the loss for **every** pair at **every** step.
2D Matryoshka (``Matryoshka2dLoss``) instead samples one layer and one dimension per step; the paper
shows the fixed, all-pairs schedule closes most of the gap to separately trained small models.

Per pair the loss is MultipleNegativesRankingLoss on the embeddings pooled from that layer's hidden
states, truncated to ``dim`` and re-normalised. As in the authors' code (and sentence-transformers'
``AdaptiveLayerLoss``, whose layer caching this reuses), each smaller pair also gets a KL-divergence
term pulling its softmax-ed embedding towards the full model's (the teacher is detached), weighted
by ``kl_div_weight`` and tempered by ``kl_temperature`` (0 turns the term off). The total is the
plain sum over pairs: small sizes are not down-weighted.

Torch and sentence-transformers are imported when the loss is built, never at module import.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from workers.common.configs.training import check_pairs


def default_dims(dimension: int, smallest: int = 32) -> list[int]:
    """Powers of two from ``smallest`` up to below ``dimension``, then ``dimension`` itself.

    768 gives [32, 64, 128, 256, 512, 768] (the Starbucks paper's dims); 384 gives
    [32, 64, 128, 256, 384]; a model narrower than ``smallest`` gives just its own width.
    """
    dims: list[int] = []
    d = smallest
    while d < dimension:
        dims.append(d)
        d *= 2
    return dims + [dimension]


def default_starbucks_pairs(num_layers: int, dimension: int) -> list[tuple[int, int]]:
    """The paper's schedule generalised: one pair per default dim, layers spread evenly to the top.

    BERT-base (12 layers, 768) gives exactly the paper's six pairs (2, 32) … (12, 768);
    MiniLM-L6 (6, 384) gives (1, 32), (2, 64), (4, 128), (5, 256), (6, 384).
    """
    dims = default_dims(dimension)
    n = len(dims)
    return [(max(1, round(num_layers * (i + 1) / n)), dim) for i, dim in enumerate(dims)]


def build_starbucks_loss(
    model: Any,
    pairs: Sequence[Sequence[int]],
    *,
    scale: float = 20.0,
    kl_div_weight: float = 1.0,
    kl_temperature: float = 0.3,
) -> Any:
    """A StarbucksLoss over MultipleNegativesRankingLoss for ``model`` (a SentenceTransformer)."""
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    return _starbucks_class()(
        model,
        MultipleNegativesRankingLoss(model, scale=scale),
        pairs,
        kl_div_weight=kl_div_weight,
        kl_temperature=kl_temperature,
    )


_CLASS: Any = None


def _starbucks_class() -> type:
    """Defined on first use so that importing this module stays free of torch."""
    global _CLASS
    if _CLASS is not None:
        return _CLASS

    import torch
    import torch.nn.functional as F
    from sentence_transformers.base.losses.merged_forward import (
        column_merging_disabled,
        embed_columns,
    )
    from sentence_transformers.base.model import BaseModel
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sentence_transformer.losses.adaptive_layer import (
        TransformerDecorator,
    )
    from torch import Tensor, nn

    class StarbucksLoss(nn.Module):
        """Sum of ``loss`` over every (layer, dim) pair, plus a KL term per smaller pair.

        ``loss`` must expose ``compute_loss_from_embeddings(embeddings, labels)`` (as
        MultipleNegativesRankingLoss does): the embeddings of each pair are computed here, from
        the cached hidden states, and handed to it already truncated.
        """

        def __init__(
            self,
            model: Any,
            loss: nn.Module,
            pairs: Sequence[Sequence[int]],
            kl_div_weight: float = 1.0,
            kl_temperature: float = 0.3,
        ) -> None:
            super().__init__()
            if not hasattr(loss, "compute_loss_from_embeddings"):
                raise ValueError(f"{type(loss).__name__} cannot score given embeddings")
            self.model = model
            self.loss = loss
            self.pairs = check_pairs(pairs)
            self.kl_div_weight = kl_div_weight
            self.kl_temperature = kl_temperature
            if not isinstance(model[0], Transformer):
                raise ValueError("Starbucks needs a model whose first module is a Transformer")
            layers = model[0].auto_model.config.num_hidden_layers
            width = model.get_embedding_dimension()
            for layer, dim in self.pairs:
                if layer > layers:
                    raise ValueError(f"layer {layer} > the model's {layers} layers")
                if width is not None and dim > width:
                    raise ValueError(f"dim {dim} > the model's embedding dimension {width}")
            self.num_layers, self.width = layers, width

        def _unwrapped(self) -> Any:
            # DDP (.module) / torch.compile (._orig_mod) wrappers, as AdaptiveLayerLoss does.
            model = self.model
            while not isinstance(model, BaseModel):
                model = getattr(model, "_orig_mod", None) or model.module
            return model

        def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
            features = list(sentence_features)
            model = self._unwrapped()
            transformer = model[0]
            original = transformer.forward
            decorator = TransformerDecorator(transformer, original)
            transformer.forward = decorator
            try:
                # Layer hand-off goes through the per-column feature dicts: no merged forward.
                with column_merging_disabled():
                    # The one real forward pass: final layer, every hidden state cached.
                    full = embed_columns(self.model, features)
                    teacher = torch.cat(full).detach() if self._kl_on() else None
                    total: Tensor | float = 0.0
                    for layer, dim in self.pairs:
                        if layer == self.num_layers:
                            embeddings = full
                        else:
                            # hidden_states[0] is the embedding layer, so layer L is index L.
                            decorator.set_layer_idx(layer)
                            embeddings = embed_columns(self.model, features)
                        truncated = [F.normalize(e[..., :dim], p=2, dim=-1) for e in embeddings]
                        total = total + self.loss.compute_loss_from_embeddings(truncated, labels)
                        if teacher is not None and (layer, dim) != (self.num_layers, self.width):
                            total = total + self._kl(
                                torch.cat(embeddings)[..., :dim], teacher[..., :dim]
                            )
            finally:
                transformer.forward = original
            assert isinstance(total, Tensor)
            return total

        def _kl_on(self) -> bool:
            return self.kl_temperature > 0 and self.kl_div_weight > 0

        def _kl(self, student: Tensor, teacher: Tensor) -> Tensor:
            t = self.kl_temperature
            kl = F.kl_div(
                F.log_softmax(student / t, dim=-1),
                F.softmax(teacher / t, dim=-1),
                reduction="batchmean",
            )
            return kl * t * self.kl_div_weight

        def get_config_dict(self) -> dict[str, Any]:
            return {
                "loss": type(self.loss).__name__,
                "pairs": [list(p) for p in self.pairs],
                "kl_div_weight": self.kl_div_weight,
                "kl_temperature": self.kl_temperature,
            }

        @property
        def citation(self) -> str:
            return (
                "@article{zhuang2024starbucks,\n"
                "  title={Starbucks: Improved Training for 2D Matryoshka Embeddings},\n"
                "  author={Zhuang, Shengyao and Wang, Shuai and Koopman, Bevan"
                " and Zuccon, Guido},\n"
                "  journal={arXiv preprint arXiv:2410.13230},\n"
                "  year={2024}\n"
                "}"
            )

    _CLASS = StarbucksLoss
    return _CLASS
