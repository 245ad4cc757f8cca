"""A small tokenizer for the tiny test models, built offline from a local word list.

It has the shape of T5's tokenizer (a unigram model over SentencePiece-style
pieces, `</s>` appended, `<pad>` for padding), so the pipelines use it exactly
as they use the real one. Any text tokenizes: words outside the list fall back
to single characters.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerFast

SPECIAL = ("<pad>", "</s>", "<unk>")
WORDS = (
    "a an the of in on with and at by to from as is are this that style look "
    "oil painting watercolor watercolour sketch pencil ink charcoal drawing illustration comic anime cartoon "
    "film noir photo photograph realistic cinematic vintage retro modern neon cyberpunk fantasy dream "
    "man woman men women people person child face faces hand hands body eyes hair "
    "street city room house tree trees forest sky cloud clouds sea water river mountain field garden "
    "night day morning evening sunset light dark shadow shadows bright soft warm cold "
    "red green blue yellow orange purple black white grey gray gold silver colour color colours colors "
    "blurry low high quality worst best jpeg artifacts static overexposed washed out deformed disfigured "
    "extra fingers limbs watermark subtitles ugly noise noisy sharp detailed"
).split()
CHARACTERS = "abcdefghijklmnopqrstuvwxyz0123456789.,;:!?'\"-()/&"


def tiny_t5_tokenizer(model_max_length: int = 512) -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    vocab = [(token, 0.0) for token in SPECIAL]
    vocab += [("\u2581" + word, -2.0) for word in dict.fromkeys(WORDS)]
    vocab += [("\u2581", -3.0)] + [(char, -5.0) for char in CHARACTERS]
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=SPECIAL.index("<unk>"), byte_fallback=False))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", SPECIAL.index("</s>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
        model_max_length=model_max_length,
    )


def tiny_umt5_encoder(vocab_size: int):
    """A random-initialised two-layer UMT5 text encoder for the tiny Wan models (diffusers' test recipe)."""
    import torch
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(0)
    return UMT5EncoderModel(UMT5Config(
        vocab_size=vocab_size, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=32,
    ))


CLIP_BOS, CLIP_EOS = "<|startoftext|>", "<|endoftext|>"


def tiny_clip_tokenizer(model_max_length: int = 77):
    """A CLIP tokenizer (byte-level BPE, `</w>` word ends) over the same word list, for the tiny SD 1.5 models.

    Every byte has a token, alone and at a word's end, so any text tokenizes;
    the words of the list are whole tokens, built by one merge per letter.
    """
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens = [CLIP_BOS, CLIP_EOS] + alphabet + [char + "</w>" for char in alphabet]
    merges: list[tuple[str, str]] = []
    for word in dict.fromkeys(WORDS):
        for end in range(1, len(word)):
            suffix = "</w>" if end == len(word) - 1 else ""
            pair = (word[:end], word[end] + suffix)
            if pair not in merges:
                merges.append(pair)
                tokens.append(pair[0] + pair[1])
    vocab = {token: index for index, token in enumerate(dict.fromkeys(tokens))}
    return CLIPTokenizer(vocab=vocab, merges=merges, unk_token=CLIP_EOS, bos_token=CLIP_BOS, eos_token=CLIP_EOS,
                         pad_token=CLIP_EOS, model_max_length=model_max_length)


BART_SPECIAL = ("<s>", "<pad>", "</s>", "<unk>")
IMAGE_TOKEN = "<image>"


def tiny_bart_tokenizer(model_max_length: int = 1024):
    """A BART tokenizer (byte-level BPE, `Ġ` marks a word start) over the same word list, for the tiny captioner.

    The special tokens sit where BART has them (`<s>` 0, `<pad>` 1, `</s>` 2,
    `<unk>` 3) and `<image>` is the image placeholder Florence-2's processor
    expects. Every byte has a token, so any text tokenizes; each word of the
    list becomes one token `Ġword`, built by one merge per letter.
    """
    from tokenizers import pre_tokenizers
    from transformers import BartTokenizer

    tokens = [*BART_SPECIAL, *sorted(pre_tokenizers.ByteLevel.alphabet())]
    merges: list[tuple[str, str]] = []
    for word in dict.fromkeys(WORDS):
        spelled = "\u0120" + word
        for end in range(1, len(spelled)):
            pair = (spelled[:end], spelled[end])
            if pair not in merges:
                merges.append(pair)
                tokens.append(pair[0] + pair[1])
    vocab = {token: index for index, token in enumerate(dict.fromkeys(tokens))}
    return BartTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length,
                         extra_special_tokens={"image_token": IMAGE_TOKEN})
