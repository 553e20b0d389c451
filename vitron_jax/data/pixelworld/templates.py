"""Wording of PixelWorld: noun phrases, referring expressions, motion phrases, templates.

Every task draws its instruction from several templates (paraphrases); referring expressions
use a random choice among the attribute subsets that single out the object in its scene.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from vitron_jax.data.pixelworld import scene as SC
from vitron_jax.data.pixelworld import vocab as V


def pick(rng: np.random.Generator, options: Sequence[str]) -> str:
  return options[int(rng.integers(len(options)))]


def cap(text: str) -> str:
  return text[:1].upper() + text[1:]


def noun_phrase(obj: SC.Obj, *, size: bool = True, colour: str | None = None,
                definite: bool = False) -> str:
  """"a large red circle" / "the red circle" (colour defaults to the first frame's)."""
  words = ([obj.size] if size else []) + [colour or obj.colour, obj.shape]
  det = "the" if definite else V.article(words[0])
  return " ".join([det] + words)


def join(items: Sequence[str]) -> str:
  items = list(items)
  if len(items) <= 1:
    return "".join(items)
  return ", ".join(items[:-1]) + " and " + items[-1]


# attribute subsets a referring expression may use, shortest first.
_REF_KEYS = (("shape",), ("colour",), ("colour", "shape"), ("size", "shape"),
             ("size", "colour"), ("size", "colour", "shape"))


def _matches(obj: SC.Obj, attrs: dict[str, str]) -> bool:
  return all((obj.shape == v) if k == "shape" else (obj.size == v) if k == "size"
             else (v in obj.colours) for k, v in attrs.items())


def _ref_text(attrs: dict[str, str], rng: np.random.Generator, avoid: Sequence[str]) -> str:
  words = [attrs[k] for k in ("size", "colour") if k in attrs]
  noun = attrs.get("shape") or pick(rng, ("object", "one") if "shape" in avoid
                                    else ("object", "shape", "one"))
  return " ".join(["the"] + words + [noun])


def refer(scene: SC.Scene, k: int, rng: np.random.Generator, *,
          avoid: Sequence[str] = (), full: bool = False) -> tuple[str, dict[str, str]] | None:
  """A referring expression ("the red circle") that picks out object k alone, or None.

  avoid: attributes the expression must not use (e.g. "colour" for a colour question);
  full: always "the {size} {colour} {shape}". Returns (text, attributes used).
  """
  obj = scene.objects[k]
  values = {"shape": obj.shape, "colour": obj.colour, "size": obj.size}
  keys = [_REF_KEYS[-1]] if full else _REF_KEYS
  ok = []
  for ks in keys:
    if any(a in ks for a in avoid):
      continue
    attrs = {a: values[a] for a in ks}
    if sum(_matches(o, attrs) for o in scene.objects) == 1:
      ok.append(attrs)
  if not ok:
    return None
  attrs = ok[int(rng.integers(len(ok)))]
  return _ref_text(attrs, rng, avoid), attrs


def moving(direction: str, curved: bool = False) -> str:
  """"moving left", "moving up along a curve"."""
  return f"moving {direction}" + (" along a curve" if curved else "")


def motion_phrase(obj: SC.Obj) -> str:
  """"moving left", "moving up along a curve", "entering from the right", "staying still"."""
  if obj.motion == "static":
    text = "staying still"
  elif obj.event == "enters":
    side = {"left": "right", "right": "left", "up": "bottom", "down": "top"}[obj.motion]
    text = f"entering from the {side}"
  elif obj.event == "leaves":
    text = f"moving {obj.motion} out of the frame"
  else:
    text = moving(obj.motion, obj.path == "curved")
  if obj.change_frame >= 0:
    text += f" and turning {obj.final_colour}"
  return text


def background_phrase(scene: SC.Scene) -> str:
  return on_background(scene.background)


def on_background(name: str) -> str:
  """"on a white background", "on a noisy background"."""
  return f"on {V.article(name)} {name} background"


def positioned(obj: SC.Obj, size: int, frame: int = 0) -> str:
  x, y = obj.centres[frame]
  return V.POSITION_PHRASES[V.position_of(x, y, size)]


def number(rng: np.random.Generator, n: int) -> str:
  return V.NUMBER_WORDS[n] if n < len(V.NUMBER_WORDS) and rng.random() < 0.6 else str(n)


# ---- instruction templates ({ref}, {np}, {colour}, ... filled by the tasks) ----

CAPTION_Q = ("Describe the image.", "What do you see in this picture?",
             "Give a short caption for this image.", "Caption this image.",
             "Describe this scene briefly.", "What is shown here?")
CAPTION_A = ("{objs} {bg}.", "There is {objs} {bg}.", "The image shows {objs} {bg}.",
             "I see {objs} {bg}.")
VIDEO_CAPTION_Q = ("Describe the video.", "What happens in this video?",
                   "Give a short caption for this clip.", "Summarise the video.")
COLOUR_Q = ("What colour is {ref}?", "Which colour does {ref} have?",
            "Tell me the colour of {ref}.", "What is the colour of {ref}?")
COLOUR_A = ("{Colour}.", "It is {colour}.", "{Ref} is {colour}.")
SHAPE_Q = ("What shape is {ref}?", "What kind of shape is {ref}?",
           "Which shape is {ref}?", "Name the shape of {ref}.")
SHAPE_A = ("A {shape}.", "It is a {shape}.", "{Ref} is a {shape}.")
SIZE_Q = ("How big is {ref}?", "Is {ref} small, medium or large?", "What size is {ref}?")
SIZE_A = ("{Size}.", "It is {size}.", "{Ref} is {size}.")
COUNT_Q = ("How many {what} are there?", "Count the {what}.",
           "How many {what} can you see?", "What is the number of {what} in the image?")
COUNT_A = ("{n}.", "There are {n}.", "I count {n}.")
EXIST_Q = ("Is there {np} in the image?", "Can you see {np}?", "Does the image contain {np}?",
           "Is {np} present?")
YES_A = ("Yes.", "Yes, there is.", "Yes, I can see it.")
NO_A = ("No.", "No, there is not.", "No, I cannot see one.")
RELATION_Q = ("Where is {a} relative to {b}?", "Is {a} left, right, above or below {b}?",
              "How is {a} placed with respect to {b}?")
RELATION_A = {"left": ("Left.", "It is to the left of {b}.", "{A} is left of {b}."),
              "right": ("Right.", "It is to the right of {b}.", "{A} is right of {b}."),
              "above": ("Above.", "It is above {b}.", "{A} is above {b}."),
              "below": ("Below.", "It is below {b}.", "{A} is below {b}.")}
REGION_Q = ("What is in {roi}?", "Describe the object in {roi}.",
            "What object is marked by {roi}?", "Tell me about {roi}.")
REGION_A = ("{Np}.", "It is {np}.", "The region shows {np}.")
GROUNDED_ALL_Q = ("List every object with its location.", "Where is each object?",
                  "Name the objects and give their boxes.")
GROUNDED_FIND_Q = ("Where are the {what}?", "Find all {what} and give their boxes.",
                   "Locate every {one} in the image.")
GROUNDED_NONE_A = ("There are no {what}.", "I cannot find any {what}.")
BOX_Q = ("Where is {ref}?", "Give the bounding box of {ref}.", "Locate {ref}.",
         "Find {ref} in the image.", "Show me where {ref} is.")
BOX_A = ("{box}", "{Ref} is at {box}.", "It is here: {box}.", "{box} ({ref})")
VGROUND_Q = ("When and where does {ref} appear?",
             "Find {ref} in the video and tell me when it is visible.",
             "Locate {ref}: its box when it first appears and the frames it is visible in.")
VGROUND_A = ("{box}{span}", "It appears at {box} from {t0} to {t1}.",
             "{Ref} is at {box}, visible in frames {t0} to {t1}.")
MOTION_Q = ("Which way does {ref} move?", "In which direction does {ref} go?",
            "How does {ref} move?")
CHANGE_Q = ("What colour does {ref} turn into?", "Which colour does {ref} become?")
CHANGES_YN_Q = ("Does {ref} change colour?", "Does the colour of {ref} change?")
EVENT_Q = {"enters": ("Does {ref} enter the frame?", "Does {ref} come into view?"),
           "leaves": ("Does {ref} leave the frame?", "Does {ref} move out of view?")}
SEG_Q = ("Segment {ref}.", "Please give me a mask of {ref}.", "Can you segment {ref}?",
         "Cut out {ref}.", "Highlight the pixels of {ref}.")
SEG_ROI_Q = ("Segment the object in {roi}.", "Give me a mask of what is in {roi}.")
SEG_A = ("Sure. {inv}", "Here is the mask of {ref}. {inv}", "{inv}", "Segmenting {ref}. {inv}")
TRACK_Q = ("Track {ref} through the video.", "Segment {ref} in every frame.",
           "Follow {ref} and give its masks.", "Can you track {ref}?")
TRACK_ROI_Q = ("Track the object in {roi}.", "Follow the object marked by {roi} in the video.")
T2I_Q = ("Draw {prompt}.", "Generate an image of {prompt}.", "Create a picture with {prompt}.",
         "Please paint {prompt}.")
T2I_ROI_Q = ("Draw {items} {bg}.", "Generate an image with {items} {bg}.")
GEN_A = ("Sure, here it is. {inv}", "{inv}", "Here is the result. {inv}", "Okay. {inv}")
T2V_Q = ("Make a video of {prompt}.", "Generate a clip showing {prompt}.",
         "Create an animation of {prompt}.")
I2V_Q = ("Animate this image: {prompt}.", "Make this picture move: {prompt}.",
         "Turn this image into a video where {prompt}.")
RECOLOUR_Q = ("Make {ref} {colour}.", "Change the colour of {ref} to {colour}.",
              "Recolour {ref} {colour}.", "Turn {ref} {colour}.")
REMOVE_Q = ("Remove {ref}.", "Delete {ref} from the image.", "Erase {ref}.",
            "Take {ref} out of the picture.")
ADD_Q = ("Add {np} {where}.", "Put {np} {where}.", "Insert {np} {where}.")
MOVE_Q = ("Move {ref} {where}.", "Shift {ref} {where}.", "Place {ref} {where} instead.")
VEDIT_Q = ("Make {ref} {colour} in the whole video.", "Recolour {ref} to {colour} throughout "
           "the clip.", "Change {ref} to {colour} in every frame.")
