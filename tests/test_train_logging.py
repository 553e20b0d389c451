"""Run logging: JSONL metrics with throughput, TensorBoard event files (checked with a
protobuf schema of TensorFlow's Event), a PNG of the loss curves, periodic evaluation."""
import io
import json

import PIL.Image
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from train_runs import load_config
from vitron_jax.train import tensorboard as TB
from vitron_jax.train.loop import train


def _event_class():
  """`tensorflow.Event` / `Summary` with TensorFlow's field numbers (the subset we write)."""
  f = descriptor_pb2.FileDescriptorProto(name="tb_event_test.proto", package="tbtest")
  T = descriptor_pb2.FieldDescriptorProto

  def msg(name, fields):
    m = f.message_type.add(name=name)
    for fname, num, typ, label, type_name in fields:
      fd = m.field.add(name=fname, number=num, type=typ, label=label)
      if type_name:
        fd.type_name = type_name

  opt, rep = T.LABEL_OPTIONAL, T.LABEL_REPEATED
  msg("Image", [("height", 1, T.TYPE_INT32, opt, None), ("width", 2, T.TYPE_INT32, opt, None),
                ("colorspace", 3, T.TYPE_INT32, opt, None),
                ("encoded_image_string", 4, T.TYPE_BYTES, opt, None)])
  msg("Value", [("tag", 1, T.TYPE_STRING, opt, None), ("simple_value", 2, T.TYPE_FLOAT, opt, None),
                ("image", 4, T.TYPE_MESSAGE, opt, ".tbtest.Image")])
  msg("Summary", [("value", 1, T.TYPE_MESSAGE, rep, ".tbtest.Value")])
  msg("Event", [("wall_time", 1, T.TYPE_DOUBLE, opt, None), ("step", 2, T.TYPE_INT64, opt, None),
                ("file_version", 3, T.TYPE_STRING, opt, None),
                ("summary", 5, T.TYPE_MESSAGE, opt, ".tbtest.Summary")])
  pool = descriptor_pool.DescriptorPool()
  pool.Add(f)
  return message_factory.GetMessageClass(pool.FindMessageTypeByName("tbtest.Event"))


def test_crc32c_known_value():
  assert TB.crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value


def test_event_file_parses_as_tensorflow_events(tmp_path):
  w = TB.EventWriter(str(tmp_path))
  w.scalars(3, {"train/loss": 1.5, "train/lr": 0.25})
  png = io.BytesIO()
  PIL.Image.new("RGB", (4, 2), "red").save(png, format="PNG")
  w.image(3, "eval/picture", png.getvalue(), 2, 4)
  w.close()
  Event = _event_class()
  events = [Event.FromString(p) for p in TB.read_tfrecords(w.path)]
  assert events[0].file_version == "brain.Event:2"
  assert events[1].step == 3
  assert {v.tag: v.simple_value for v in events[1].summary.value} == {"train/loss": 1.5,
                                                                      "train/lr": 0.25}
  img = events[2].summary.value[0].image
  assert (img.height, img.width, img.encoded_image_string) == (2, 4, png.getvalue())
  data = bytearray(open(w.path, "rb").read())
  data[-5] ^= 1
  (tmp_path / "bad").write_bytes(bytes(data))
  with pytest.raises(ValueError, match="CRC"):
    TB.read_tfrecords(str(tmp_path / "bad"))


def test_run_writes_jsonl_tensorboard_png_and_evaluates(tmp_path):
  c = load_config()
  c.train.steps = 4
  c.train.eval_every = 2
  c.train.eval_at_end = True
  c.mesh.num_devices = 1
  summary = train(c, str(tmp_path))
  rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  tr = [r for r in rows if r["kind"] == "train"]
  assert [r["step"] for r in tr] == [1, 2, 3, 4]
  for key in ("loss", "grad_norm", "lr", "steps_per_s", "examples_per_s", "tokens_per_s"):
    assert all(key in r for r in tr[1:]), key
  ev = [r for r in rows if r["kind"] == "eval"]
  assert [r["step"] for r in ev] == [2, 4]
  assert 0.0 <= ev[-1]["next_token_accuracy"] <= 1.0 and ev[-1]["chance_accuracy"] == 1 / 32
  assert summary["eval"]["next_token_accuracy"] == ev[-1]["next_token_accuracy"]
  Event = _event_class()
  (events_file,) = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
  events = [Event.FromString(p) for p in TB.read_tfrecords(str(events_file))]
  losses = {e.step: v.simple_value for e in events for v in e.summary.value
            if v.tag == "train/loss"}
  assert losses == pytest.approx({r["step"]: r["loss"] for r in tr}, rel=1e-6)
  assert any(v.tag == "eval/next_token_accuracy" for e in events for v in e.summary.value)
  with PIL.Image.open(tmp_path / "loss.png") as im:
    assert im.format == "PNG" and im.size == (720, 420)
    assert len(set(im.convert("RGB").getdata())) > 3  # axes, a curve, text
  assert json.loads((tmp_path / "summary.json").read_text())["final_step"] == 4
