"""A word-level tokenizer for PixelWorld (a Hugging Face `PreTrainedTokenizerFast`).

PixelWorld's language is a few hundred words, so a word-level vocabulary keeps sequences short
(one id per word or punctuation mark) and the tiny LLMs of the PixelWorld runs fast on CPU.
The vocabulary (`pixelworld_words.WORDS`, sorted, after the control tokens ``<pad> <s> </s>
<unk>`` = ids 0..3) is every word and punctuation mark of the templates, collected by
`collect_vocabulary` from samples of every task in every split, plus single letters and common
punctuation; it is stored so that ids never depend on a run (a test re-collects it). The protocol
tokens (`vitron_jax.protocol.tokens`) are added on top by `add_protocol_tokens`, like for any
other tokenizer; `build_tokenizer()` does both.

A word outside the vocabulary becomes ``<unk>`` (never dropped); `save` / `load` keep the
tokenizer beside a checkpoint (``tokenizer.json`` + config) so chat and evaluation reload the
exact ids. Real-data runs use a local Hugging Face tokenizer folder instead
(`config.task.tokenizer = "/path/to/vicuna"`).
"""
from __future__ import annotations

import os

from vitron_jax.data.pixelworld import TASKS, PixelWorld, WorldConfig
from vitron_jax.data.pixelworld import vocab as V
from vitron_jax.data.pixelworld_words import WORDS
from vitron_jax.protocol import tokens as T

CONTROL = ("<pad>", "<s>", "</s>", "<unk>")
# Sizes and frame counts change the wording (coordinates never appear as text; counts do).
_COLLECT_CONFIGS = (WorldConfig(image_size=32, num_frames=2, max_objects=3),
                    WorldConfig(image_size=64, num_frames=8, max_objects=8))
_SAMPLES_PER_TASK = 60


def _pre_tokenizer():
  from tokenizers import pre_tokenizers  # pylint: disable=import-outside-toplevel
  return pre_tokenizers.Whitespace()  # \w+ | [^\w\s]+


def _words(text: str) -> list[str]:
  return [w for w, _ in _pre_tokenizer().pre_tokenize_str(text)]


def _strip_protocol(text: str) -> str:
  for tok in T.all_special_tokens():
    text = text.replace(tok, " ")
  return text


def collect_vocabulary(samples_per_task: int = _SAMPLES_PER_TASK) -> set[str]:
  """Every word of PixelWorld's chat template and of generated samples (slow: seconds)."""
  words: set[str] = set()
  chat = ("A chat between a curious user and an artificial intelligence assistant. "
          "USER: ASSISTANT: 0 1 2 3 4 5 6 7 8 9 10")
  words.update(_words(chat))
  # count answers ("Zero.", "I count seven.") reach some numbers too rarely for sampling
  words.update(w for n in V.NUMBER_WORDS for w in (n, n.capitalize()))
  for cfg in _COLLECT_CONFIGS:
    for split in ("train", "val", "heldout"):
      world = PixelWorld(cfg, split=split, seed=0)
      for task in TASKS:
        for i in range(samples_per_task):
          s = world.sample(i, task=task)
          for turn in s["conversations"]:
            words.update(_words(_strip_protocol(turn["value"])))
  return words


def build_tokenizer(with_protocol: bool = True):
  """The PixelWorld tokenizer (protocol tokens added unless `with_protocol=False`)."""
  from tokenizers import Tokenizer, decoders, models  # pylint: disable=import-outside-toplevel
  from transformers import PreTrainedTokenizerFast  # pylint: disable=import-outside-toplevel
  vocab = {t: i for i, t in enumerate(CONTROL + WORDS)}
  tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
  tok.pre_tokenizer = _pre_tokenizer()
  tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)  # words joined by spaces
  fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                 eos_token="</s>", unk_token="<unk>")
  if with_protocol:
    from vitron_jax.protocol.tokenizer import add_protocol_tokens  # pylint: disable=import-outside-toplevel
    add_protocol_tokens(fast)
  return fast


def save(tokenizer, directory: str) -> None:
  """Write the tokenizer (`save_pretrained`) to `directory`."""
  os.makedirs(directory, exist_ok=True)
  tokenizer.save_pretrained(directory)


def load(spec: str):
  """"pixelworld" -> `build_tokenizer()`; a folder -> that Hugging Face tokenizer (local files
  only) with the protocol tokens added if it lacks them."""
  if spec == "pixelworld":
    return build_tokenizer()
  if not os.path.isdir(spec):
    raise FileNotFoundError(f"tokenizer {spec!r}: expected 'pixelworld' or a local Hugging Face "
                            f"tokenizer folder")
  from transformers import AutoTokenizer  # pylint: disable=import-outside-toplevel
  from vitron_jax.protocol.tokenizer import add_protocol_tokens  # pylint: disable=import-outside-toplevel
  tok = AutoTokenizer.from_pretrained(spec, local_files_only=True)
  add_protocol_tokens(tok)
  return tok
