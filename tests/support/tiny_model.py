"""A tiny random BERT with a real WordPiece tokenizer, saved as a sentence-transformers folder.

Built in well under a second; used wherever a test needs a model that really runs.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_SENTENCES = [
    "Cats are small domesticated carnivorous mammals.",
    "Dogs were the first species to be domesticated.",
    "Python is a programming language that lets you work quickly.",
    "Rust is a language empowering everyone to build reliable software.",
    "Coffee is a brewed drink prepared from roasted coffee beans.",
    "Tea is an aromatic beverage prepared by pouring hot water over leaves.",
    "The moon orbits the earth roughly once every twenty seven days.",
    "Mars is the fourth planet from the sun and is red and dusty.",
    "Retrieval models map queries and documents into one vector space.",
    "Evaluation compares rankings against human relevance judgements.",
]


def build_tiny_model(
    folder: Path,
    *,
    sentences: list[str] | None = None,
    dimension: int = 64,
    max_seq_length: int = 64,
    seed: int = 0,
) -> Path:
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules as models
    from tokenizers import Tokenizer
    from tokenizers.models import WordPiece
    from tokenizers.normalizers import BertNormalizer
    from tokenizers.pre_tokenizers import BertPreTokenizer
    from tokenizers.processors import TemplateProcessing
    from tokenizers.trainers import WordPieceTrainer
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    folder = Path(folder)
    raw = folder.parent / (folder.name + "-raw")
    raw.mkdir(parents=True, exist_ok=True)
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(WordPiece(unk_token="[UNK]"))
    tok.normalizer = BertNormalizer(lowercase=True)
    tok.pre_tokenizer = BertPreTokenizer()
    tok.train_from_iterator(
        list(sentences or DEFAULT_SENTENCES) * 2,
        WordPieceTrainer(vocab_size=400, special_tokens=special, min_frequency=1),
    )
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    # PreTrainedTokenizerFast(tokenizer_object=…): BertTokenizerFast(vocab_file=…) would silently
    # map every word to [UNK] under transformers 5 (see NOTES.md).
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=max_seq_length,
    )
    fast.save_pretrained(raw)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=dimension,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=max(128, max_seq_length),
    )
    BertModel(config).save_pretrained(raw)
    transformer = models.Transformer(str(raw), max_seq_length=max_seq_length)
    pooling = models.Pooling(transformer.get_embedding_dimension(), pooling_mode="mean")
    SentenceTransformer(modules=[transformer, pooling, models.Normalize()], device="cpu").save(
        str(folder)
    )
    return folder
