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
