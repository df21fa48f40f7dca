"""A SmolVLM-architecture backbone built from code, so that SmolVLA trains from scratch with no download.

LeRobot's SmolVLA builds its vision-language backbone from `vlm_model_name` (transformers' AutoConfig
and AutoProcessor) and, with `load_vlm_weights=False`, with random weights. A local folder holding a
SmolVLM config, an image processor and a tokenizer is therefore all it needs. This module writes such a
folder: the real SmolVLM architecture (SigLIP-style vision tower, pixel-shuffle connector, Llama text
model) at a size our CPUs train, and a word-level tokenizer whose vocabulary is the words of the
dataset's task texts (an unseen word becomes `<unk>`) plus the special tokens SmolVLA reads
(`<fake_token_around_image>`, `<global-img>`, `<image>`).

The folder travels inside every checkpoint (`BACKBONE_DIR` beside `config.json`), and loading points
`vlm_model_name` and the tokenizer step at that copy (`koch_runtime.torch_runtime`): a checkpoint never
names a Hub model to fetch. Fine-tuning real `smolvla_base` weights uses a local copy of SmolVLM2's
config and tokenizer files the same way (docs/train.md).

pi0 takes its sizes from LeRobot (PaliGemma's, fixed) and only its tokenizer from a folder: the same
word-level tokenizer, written alone (`build_tokenizer`) and carried in `TOKENIZER_DIR`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from koch_common.config import ConfigError

BACKBONE_DIR = "vlm_backbone"  # SmolVLA: in a checkpoint's pretrained_model folder
TOKENIZER_DIR = "tokenizer"  # pi0: likewise
# The policy type whose backbone comes from a `vlm_model_name` folder.
SMOLVLA = "smolvla"
# The policy type LeRobot sizes itself, with only the tokenizer ours.
PI0 = "pi0"
PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<|im_start|>", "<end_of_utterance>"
IMAGE_TOKENS = {"fake_image_token": "<fake_token_around_image>", "global_image_token": "<global-img>",
                "image_token": "<image>", "end_of_utterance_token": EOS}
SPECIAL_TOKENS = [PAD, UNK, BOS, EOS, IMAGE_TOKENS["fake_image_token"], IMAGE_TOKENS["global_image_token"],
                  IMAGE_TOKENS["image_token"]]
# Common instruction words, so that an operator's rewording of a dataset text keeps most of its tokens.
BASE_WORDS = ("a", "an", "the", "to", "of", "on", "in", "into", "up", "down", "left", "right", "it", "and", "then",
              "pick", "place", "put", "move", "reach", "lift")


@dataclass(frozen=True)
class SmolVLMBackbone:
    """Sizes of the generated backbone (training config: `policy.vlm_backbone`). The defaults train on two
    CPU cores; SmolVLM2-500M is text 960 wide x 32 layers, vision 768 x 12 at 512 px (a GPU run)."""

    text_hidden: int = 128
    text_layers: int = 4
    text_heads: int = 4
    text_kv_heads: int = 1
    text_intermediate: int = 256
    vision_hidden: int = 64
    vision_layers: int = 2
    vision_heads: int = 2
    vision_intermediate: int = 128
    image_size: int = 64  # the camera image is resized (with padding) to image_size x image_size
    patch_size: int = 16
    scale_factor: int = 2  # pixel shuffle: (image_size / patch_size / scale_factor)^2 image tokens

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"policy.vlm_backbone.{field.name} must be a positive int, got {value!r}")
        patches = self.image_size // self.patch_size
        if self.image_size % self.patch_size or patches % self.scale_factor:
            raise ConfigError(
                f"policy.vlm_backbone: image_size {self.image_size} must be a multiple of patch_size "
                f"{self.patch_size} x scale_factor {self.scale_factor}")
        if self.text_hidden % self.text_heads or self.text_heads % self.text_kv_heads:
            raise ConfigError("policy.vlm_backbone: text_hidden must divide by text_heads, and text_heads by "
                              "text_kv_heads")
        if self.vision_hidden % self.vision_heads:
            raise ConfigError("policy.vlm_backbone: vision_hidden must divide by vision_heads")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> SmolVLMBackbone:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values or {}) - known)
        if unknown:
            raise ConfigError(f"policy.vlm_backbone: unknown key(s) {unknown}; valid keys are {sorted(known)}")
        return cls(**dict(values or {}))

    @property
    def image_tokens(self) -> int:
        return (self.image_size // self.patch_size // self.scale_factor) ** 2


def words_of(texts: Iterable[str]) -> list[str]:
    """The vocabulary for `texts`: their lower-case words and the base words, sorted (deterministic)."""
    words = set(BASE_WORDS)
    for text in texts:
        words.update(re.findall(r"[a-z0-9]+|[^\sa-z0-9]", text.lower()))
    return sorted(words)


def word_tokenizer(texts: Iterable[str]) -> Any:
    """A word-level fast tokenizer over the words of `texts` (and the base words), with the special tokens
    SmolVLA reads. Deterministic: the same texts give the same ids."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate([*SPECIAL_TOKENS, *words_of(texts)])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tokenizer.normalizer = normalizers.Lowercase()
    # Words and punctuation apart, as words_of splits them.
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                       pre_tokenizers.Punctuation()])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token=UNK, pad_token=PAD, bos_token=BOS,
                                   eos_token=EOS, extra_special_tokens=IMAGE_TOKENS)


def build_backbone(folder: Path, texts: Iterable[str], spec: SmolVLMBackbone) -> Path:
    """Write the backbone folder for `texts` (the dataset's task texts) into `folder`; returns it.

    The same texts and spec give the same files, so a resumed run rebuilds it identically.
    """
    from transformers import SmolVLMConfig, SmolVLMImageProcessor, SmolVLMProcessor
    from transformers.models.smolvlm.video_processing_smolvlm import SmolVLMVideoProcessor

    fast = word_tokenizer(texts)
    vocab = fast.get_vocab()
    edge = {"longest_edge": spec.image_size}
    processor = SmolVLMProcessor(
        image_processor=SmolVLMImageProcessor(do_image_splitting=False, max_image_size=edge, size=edge),
        tokenizer=fast, video_processor=SmolVLMVideoProcessor(), image_seq_len=spec.image_tokens)

    def write(staging: Path) -> None:
        processor.save_pretrained(staging)
        SmolVLMConfig(
            image_token_id=vocab[IMAGE_TOKENS["image_token"]], scale_factor=spec.scale_factor,
            pad_token_id=vocab[PAD], vocab_size=len(vocab),
            text_config={"model_type": "llama", "hidden_size": spec.text_hidden, "vocab_size": len(vocab),
                         "intermediate_size": spec.text_intermediate, "num_hidden_layers": spec.text_layers,
                         "num_attention_heads": spec.text_heads, "num_key_value_heads": spec.text_kv_heads,
                         "head_dim": spec.text_hidden // spec.text_heads, "max_position_embeddings": 1024,
                         "pad_token_id": vocab[PAD]},
            vision_config={"hidden_size": spec.vision_hidden, "intermediate_size": spec.vision_intermediate,
                           "num_hidden_layers": spec.vision_layers, "num_attention_heads": spec.vision_heads,
                           "image_size": spec.image_size, "patch_size": spec.patch_size},
        ).save_pretrained(staging)
        (staging / "koch_backbone.json").write_text(json.dumps(dataclasses.asdict(spec), indent=2) + "\n")

    return _write_folder(folder, write)


def build_tokenizer(folder: Path, texts: Iterable[str]) -> Path:
    """Write the word-level tokenizer for `texts` into `folder` (pi0 from scratch: its model sizes are
    LeRobot's, only the tokenizer is ours); returns it."""
    fast = word_tokenizer(texts)
    return _write_folder(folder, fast.save_pretrained)


def _write_folder(folder: Path, write: Callable[[Path], Any]) -> Path:
    """`write` into a staging folder, then move it to `folder` unless `folder` already holds the same files."""
    staging = folder.with_name(f".{folder.name}.staging-{os.getpid()}")  # one per process (multi-GPU ranks)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    write(staging)
    if folder.is_dir() and _same_files(folder, staging):
        shutil.rmtree(staging)  # a resumed run, or another rank, wrote it already
    else:
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)
    return folder


def _same_files(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in b.iterdir())
    return names == sorted(p.name for p in a.iterdir()) and all(
        (a / n).read_bytes() == (b / n).read_bytes() for n in names)


def smolvla_overrides(backbone: Path, spec: SmolVLMBackbone) -> dict[str, Any]:
    """SmolVLAConfig keys that point it at `backbone` (random weights) and size its inputs to it."""
    return {"vlm_model_name": str(backbone), "load_vlm_weights": False,
            "resize_imgs_with_padding": (spec.image_size, spec.image_size),
            "num_vlm_layers": spec.text_layers}


def is_backbone_folder(path: Path) -> bool:
    return (path / "config.json").is_file() and is_tokenizer_folder(path)


def is_tokenizer_folder(path: Path) -> bool:
    return (path / "tokenizer_config.json").is_file()
