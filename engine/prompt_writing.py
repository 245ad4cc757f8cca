"""Auto Prompt's writing: captions of the source and of the style or reference image become a prompt.

`compose_prompt` combines the captions with what the user wrote and adapts the
prompt and the negative prompt to whether the shot shows people;
`suggest_prompt` samples frames, captions them (`engine.captions.Captioner`) and
composes.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import structlog

from engine.catalog import DEFAULT_NEGATIVE_PROMPT
from engine.errors import FrameRangeError

if TYPE_CHECKING:
    from engine.captions import Captioner

log = structlog.get_logger("hotshot.captions")

CAPTION_SIDE = 768
"""Frames are decoded for captioning with their long side at most this many pixels (Florence-2 sees 768x768)."""

PERSON_WORDS = frozenset("""
    man men woman women person persons people human humans someone somebody boy boys girl girls child children
    kid kids baby babies toddler toddlers teenager teenagers adult adults guy guys lady ladies gentleman gentlemen
    crowd crowds actor actors actress actresses dancer dancers player players worker workers soldier soldiers
    policeman policemen pedestrian pedestrians passenger passengers rider riders performer performers singer
    singers musician musicians audience spectators he she him his her hers himself herself
""".split())
"""Words that name a person. A caption holding one means "people" when no detector is given, and with
`people=False` a generated phrase holding one is dropped from the prompt."""

ANATOMY_WORDS = frozenset("""
    face faces facial hand hands finger fingers limb limbs arm arms leg legs foot feet body bodies anatomy
    disfigured eye eyes mouth lips teeth neck head heads skin hair torso
""".split())
"""Human body words. With `people=False` a negative-prompt phrase holding one of these or of
PERSON_WORDS ("extra fingers", "deformed hands", "disfigured") is dropped. They do not mean "people"
in a caption by themselves ("the face of a clock", "a cat with green eyes")."""

HUMAN_TERMS = PERSON_WORDS | ANATOMY_WORDS
"""Every word that makes a negative-prompt phrase human-only."""

LEAD_INS = (
    "in this image we can see", "in this image i can see", "in this image", "in the image", "this image shows",
    "the image shows", "the image depicts", "the image is", "this is an image of", "this is a picture of",
    "the picture shows", "the photo shows", "an image of", "a picture of",
)
"""Caption openings that say nothing about the picture; removed from the start of each sentence."""

STOP_WORDS = frozenset("a an the of in on at to and with by from as is are it its this that there".split())

_TAG = re.compile(r"</?[A-Za-z_][^<>\s]{0,40}>")
_WORD = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*")
_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+|\n+")


@dataclass(frozen=True)
class ComposedPrompt:
    """The written prompt and negative prompt, and everything the Render Info records about how they came about."""

    prompt: str
    negative_prompt: str
    captions: list[str]
    dropped_terms: list[str]
    style_caption: str | None = None
    people: bool = True
    people_from: Literal["given", "detector", "captions"] = "given"
    person_counts: list[int] | None = None
    frames: list[int] = field(default_factory=list)
    model: str | None = None

    def to_manifest(self) -> dict:
        return {
            "prompt": self.prompt, "negative_prompt": self.negative_prompt, "model": self.model,
            "frames": self.frames, "captions": self.captions, "style_caption": self.style_caption,
            "people": self.people, "people_from": self.people_from, "person_counts": self.person_counts,
            "dropped_terms": self.dropped_terms,
        }


def compose_prompt(user_prompt: str, source_captions: list[str], style_caption: str | None, people: bool, *,
                   negative_prompt: str = DEFAULT_NEGATIVE_PROMPT, max_words: int = 60,
                   max_style_words: int = 20) -> ComposedPrompt:
    """Combine the user's prompt with the captions: `<user prompt>. scene: <s1>; <s2>. style: <style caption>`.

    The rule: the user's prompt comes first, word for word and never shortened
    or filtered; then `scene: ` and the merged source captions; then `style: `
    and the style/reference caption. A part with nothing in it is left out (no
    user prompt: the prompt starts with `scene:`).

    Merging: each caption is cleaned (`clean_caption`) and split into
    sentences, and empty lead-ins ("The image shows") are removed. Sentences
    are taken round-robin (every frame's first sentence, then every second
    one...); a comma-separated phrase is dropped when its content words all
    occur in the user's prompt or in one phrase or sentence already kept, and a
    sentence when they all occur in a longer one (see `_merge`). Whole
    sentences are kept while they fit in `max_words` words (the style caption:
    `max_style_words`); a first sentence that is longer alone is cut there.

    With `people=False` (no one in the shot), every comma-separated phrase of
    the generated text holding a PERSON_WORDS word is dropped, and so is every
    comma-separated phrase of `negative_prompt` holding a HUMAN_TERMS word
    ("extra fingers", "disfigured"); the rest stays as it was ("blurry"). With
    `people=True` nothing is dropped. `negative_prompt` is the model's default
    one; a negative prompt the user wrote is theirs, and the caller uses it as
    it is instead.
    """
    if max_words < 1 or max_style_words < 1:
        raise ValueError(f"max_words and max_style_words must be at least 1, got {max_words} and {max_style_words}")
    user = user_prompt.strip()
    dropped: list[str] = []
    scene = [_sentences(caption) for caption in source_captions]
    style = [_sentences(style_caption)] if style_caption else []
    negative = negative_prompt
    if not people:
        scene = [_drop_phrases(sentences, PERSON_WORDS, dropped) for sentences in scene]
        style = [_drop_phrases(sentences, PERSON_WORDS, dropped) for sentences in style]
        phrases = [phrase.strip() for phrase in negative_prompt.split(",") if phrase.strip()]
        dropped += [phrase for phrase in phrases if _words(phrase) & HUMAN_TERMS]
        negative = ", ".join(phrase for phrase in phrases if not _words(phrase) & HUMAN_TERMS)
    scene_text = _shorten(_merge(scene, seen=[_content(user)]), max_words)
    style_text = _shorten(_merge(style, seen=[]), max_style_words)
    parts = [user, f"scene: {scene_text}" if scene_text else "", f"style: {style_text}" if style_text else ""]
    return ComposedPrompt(
        prompt=_join([part for part in parts if part]), negative_prompt=negative,
        captions=[clean_caption(caption) for caption in source_captions], dropped_terms=dropped,
        style_caption=clean_caption(style_caption) if style_caption is not None else None, people=people,
    )


def suggest_prompt(source: Path, first: int, last: int, captioner: Captioner, *, reference: Path | None = None,
                   people_counter: Callable[[list[np.ndarray]], list[int]] | None = None, user_prompt: str = "",
                   negative_prompt: str = DEFAULT_NEGATIVE_PROMPT, samples: int = 4, max_words: int = 60,
                   max_style_words: int = 20) -> ComposedPrompt:
    """Caption `samples` frames spread evenly over `first..last` (and the reference image), and compose the prompt.

    Whether the shot shows people comes from `people_counter` (person counts for
    the sampled frames; any count above zero means people) when given; without
    one it comes from the captions: people when a source caption holds a
    PERSON_WORDS word. The result records which of the two decided.
    """
    from engine.controls.sampling import SampledFrameReader
    from engine.probe import probe
    from engine.stills import StillSpec, load_still

    # 1. Check inputs
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    info = probe(source)
    if first < 0 or last < first or last >= info.frame_count:
        raise FrameRangeError(first, last, info.frame_count)
    # 2. Decode only the sampled frames, at a size the captioner can use
    frames = sample_frames(first, last, samples)
    width, height = caption_size(info.width, info.height)
    with SampledFrameReader(source, frames, width, height, info.colour) as reader:  # one ffmpeg for all samples
        images = [frame for _, frame in reader]
    if reference is not None:
        images.append(load_still(StillSpec(path=reference), source, width, height).frame)
    # 3. Caption
    started = time.monotonic()
    captions = captioner.describe(images)
    log.info("captions written", captioner=captioner.spec.id, images=len(images),
             seconds=round(time.monotonic() - started, 2))
    source_captions, style_caption = captions[:len(frames)], (captions[-1] if reference is not None else None)
    # 4. People: the detector's counts, or the captions
    counts: list[int] | None = None
    if people_counter is not None:
        counts = [int(count) for count in people_counter(images[:len(frames)])]
        if len(counts) != len(frames):
            raise ValueError(f"the people counter returned {len(counts)} counts for {len(frames)} frames")
        people = any(count > 0 for count in counts)
    else:
        people = people_in_captions(source_captions)
    # 5. Compose
    composed = compose_prompt(user_prompt, source_captions, style_caption, people, negative_prompt=negative_prompt,
                              max_words=max_words, max_style_words=max_style_words)
    return replace(composed, people_from="detector" if counts is not None else "captions", person_counts=counts,
                   frames=frames, model=captioner.spec.id)


def sample_frames(first: int, last: int, samples: int) -> list[int]:
    """`samples` frame numbers spread evenly over `first..last`, both ends included (fewer if the range is short)."""
    if samples == 1:
        return [(first + last) // 2]
    return list(dict.fromkeys(round(first + index * (last - first) / (samples - 1)) for index in range(samples)))


def caption_size(width: int, height: int) -> tuple[int, int]:
    """The source's size scaled down (never up) to a long side of at most CAPTION_SIDE, in even numbers."""
    scale = min(1.0, CAPTION_SIDE / max(width, height))
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def people_in_captions(captions: list[str]) -> bool:
    """The fallback person detector: does any caption name a person (a PERSON_WORDS word)?"""
    return any(_words(caption) & PERSON_WORDS for caption in captions)


def clean_caption(text: str) -> str:
    """Strip model artefacts: special tokens and task tags, broken bytes, words or phrases said twice in a row."""
    text = _TAG.sub(" ", text).replace("\ufffd", " ")
    text = "".join(char if char.isprintable() else " " for char in text)
    words = text.split()
    for size in (1, 2, 3, 4):
        kept: list[str] = []
        for word in words:
            kept.append(word)
            if len(kept) >= 2 * size and [_key(w) for w in kept[-size:]] == [_key(w) for w in kept[-2 * size:-size]]:
                del kept[-size:]
        words = kept
    return " ".join(words).strip()


def _key(word: str) -> str:
    return word.lower().strip(".,;:!?\"'()")


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def _content(text: str) -> set[str]:
    return _words(text) - STOP_WORDS


def _sentences(caption: str) -> list[str]:
    """A caption's sentences, cleaned, without their final punctuation or an empty lead-in."""
    sentences = []
    for sentence in _SENTENCE_END.split(clean_caption(caption)):
        sentence = sentence.strip().rstrip(".!?;:, ")
        lowered = sentence.lower()
        for lead_in in LEAD_INS:
            if lowered.startswith(lead_in) and not lowered[len(lead_in):len(lead_in) + 1].isalnum():
                sentence = sentence[len(lead_in):].lstrip(" ,:")
                break
        if sentence:
            opening = sentence.split()[0]
            # Sentence case would read oddly mid-prompt; acronyms ("TV") keep their capitals.
            sentences.append(sentence[0].lower() + sentence[1:] if opening[1:] == opening[1:].lower() else sentence)
    return sentences


def _drop_phrases(sentences: list[str], words: frozenset[str], dropped: list[str]) -> list[str]:
    """The sentences without their comma-separated phrases that hold one of `words`; dropped phrases are noted."""
    kept = []
    for sentence in sentences:
        phrases = [phrase.strip() for phrase in sentence.split(",") if phrase.strip()]
        dropped.extend(phrase for phrase in phrases if _words(phrase) & words)
        remaining = [phrase for phrase in phrases if not _words(phrase) & words]
        if remaining:
            kept.append(", ".join(remaining))
    return kept


def _merge(captions: list[list[str]], seen: list[set[str]]) -> list[str]:
    """Sentences round-robin over the captions, without the phrases (or sentences) whose content words were all said.

    A phrase is a comma-separated part of a sentence; it is dropped when its
    content words all occur in one phrase or sentence kept before (or in `seen`).
    A sentence whose content words all occur in a longer one kept later goes too.
    """
    merged = []
    for depth in range(max((len(sentences) for sentences in captions), default=0)):
        for sentences in captions:
            if depth >= len(sentences):
                continue
            kept = []
            for phrase in (part.strip() for part in sentences[depth].split(",")):
                content = _content(phrase)
                if content and not any(content <= earlier for earlier in seen):
                    kept.append(phrase)
                    seen.append(content)
            if kept:
                merged.append(", ".join(kept))
                seen.append(_content(merged[-1]))
    contents = [_content(sentence) for sentence in merged]
    return [sentence for sentence, content in zip(merged, contents, strict=True)
            if not any(content < other for other in contents)]


def _shorten(sentences: list[str], max_words: int) -> str:
    kept: list[str] = []
    count = 0
    for sentence in sentences:
        length = len(sentence.split())
        if count + length > max_words:
            if not kept:
                kept.append(" ".join(sentence.split()[:max_words]))
            break
        kept.append(sentence)
        count += length
    return "; ".join(kept)


def _join(parts: list[str]) -> str:
    text = ""
    for part in parts:
        text = part if not text else text + (" " if text[-1] in ".!?;:," else ". ") + part
    return text
