"""A tiny random BERT with a real WordPiece tokenizer, saved as a sentence-transformers folder.

Built in well under a second (once torch is imported); used wherever a test needs a model that
really runs. The plain transformers folder it is made from stays next to it as ``<name>-raw``.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_SENTENCES = [
    "Cats are small domesticated carnivorous mammals.",
    "Dogs were the first species to be domesticated.",
    "Horses have been ridden and used for farm work for thousands of years.",
    "The blue whale is the largest animal known to have ever existed.",
    "Python is a programming language that lets you work quickly.",
    "Rust is a language empowering everyone to build reliable software.",
    "A compiler translates source code into machine instructions.",
    "Databases store records in tables and answer queries with SQL.",
    "Coffee is a brewed drink prepared from roasted coffee beans.",
    "Tea is an aromatic beverage prepared by pouring hot water over leaves.",
    "Bread is baked from a dough of flour, water and yeast.",
    "Olive oil is pressed from the fruit of olive trees.",
    "The moon orbits the earth roughly once every twenty seven days.",
    "Mars is the fourth planet from the sun and is red and dusty.",
    "Jupiter is a gas giant with a great red spot.",
    "Light from the sun reaches the earth in about eight minutes.",
    "Retrieval models map queries and documents into one vector space.",
    "Evaluation compares rankings against human relevance judgements.",
    "Fine-tuning adapts a pretrained model to a new domain.",
    "An index answers nearest neighbour queries over millions of vectors.",
    "Vaccines train the immune system to recognise a virus.",
    "Antibiotics kill bacteria but have no effect on viruses.",
    "Regular exercise lowers blood pressure and improves sleep.",
    "Proteins fold into shapes that determine their function.",
    "The river flooded the valley after a week of heavy rain.",
    "Mountains above eight thousand metres are found only in Asia.",
    "Deserts receive less than twenty five centimetres of rain a year.",
    "The library opens at nine and closes at six on weekdays.",
    "She bought three apples, two pears and a melon at the market.",
    "Trains between the two cities leave every half hour.",
]


def build_tiny_model(
    folder: Path,
    *,
    sentences: list[str] | None = None,
    dimension: int = 64,
    max_seq_length: int = 64,
    seed: int = 0,
) -> Path:
    """Build the model in ``folder`` (loadable by ``SentenceTransformer(folder)``) and return it.

    Transformer + mean Pooling + Normalize; the tokenizer's vocabulary is learnt from
    ``sentences``, so words from them become real tokens rather than [UNK].
    """
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
    raw = raw_folder(folder)
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


def raw_folder(folder: Path) -> Path:
    """The plain transformers folder (config, weights, tokenizer) next to a built tiny model."""
    folder = Path(folder)
    return folder.parent / (folder.name + "-raw")
