"""`vitron-chat`: talk to a trained VITRON from the terminal.

    vitron-chat --workdir=runs/pixelworld --image=cat.png            # interactive turns
    vitron-chat --workdir=runs/pixelworld --image=scene.png \
        --say="Describe the image." --say="Segment the red circle."  # scripted turns

Each turn prints the answer; an invocation is parsed and its backend run (when the run has
one), with the files it wrote listed under the answer. `--image` / `--video` (a GIF or `.npy`
uint8 [T, H, W, 3]) attach media to the conversation's first message.
"""
from __future__ import annotations

import sys

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "a vitron-train run folder (its newest checkpoint is used)")
flags.DEFINE_integer("step", None, "checkpoint step (default: the newest)")
flags.DEFINE_multi_string("image", [], "image file(s) for the first message")
flags.DEFINE_multi_string("video", [], "video file for the first message (.gif or .npy)")
flags.DEFINE_multi_string("say", [], "scripted user turns (default: read stdin)")
flags.DEFINE_integer("max_new_tokens", 64, "answer length limit in tokens")
flags.DEFINE_string("out_dir", None, "where backends write files (default <workdir>/chat)")
flags.mark_flags_as_required(["workdir"])


def _video(path: str):
  import numpy as np  # pylint: disable=import-outside-toplevel
  from vitron_jax.data.llava_json import _frames_of_file  # pylint: disable=import-outside-toplevel
  with open(path, "rb") as f:
    return np.stack(_frames_of_file(f.read(), path, "chat"))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from vitron_jax.serve import Vitron  # pylint: disable=import-outside-toplevel
  bot = Vitron.load(FLAGS.workdir, step=FLAGS.step, out_dir=FLAGS.out_dir)
  videos = [_video(p) for p in FLAGS.video]
  messages = []
  turns = iter(FLAGS.say) if FLAGS.say else (line.rstrip("\n") for line in sys.stdin)
  for text in turns:
    if not text.strip():
      continue
    messages.append({"role": "user", "content": text})
    reply = bot.chat(messages, images=FLAGS.image, videos=videos,
                     max_new_tokens=FLAGS.max_new_tokens)
    print(f"USER: {text}\nVITRON: {reply.text}")
    if reply.note:
      print(f"  [{reply.note}]")
    for f in reply.files:
      print(f"  wrote {f}")
    messages.append({"role": "assistant", "content": reply.text})


def run():
  """Console-script target (`vitron-chat = "vitron_jax.serve.chat_cli:run"`)."""
  app.run(main)


if __name__ == "__main__":
  run()
