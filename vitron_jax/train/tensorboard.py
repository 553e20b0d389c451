"""A dependency-free TensorBoard event-file writer (scalars and PNG images).

TensorBoard reads `events.out.tfevents.*` files: TFRecords (length, masked CRC-32C of the
length, payload, masked CRC-32C of the payload) whose payloads are `tensorflow.Event` protocol
buffers. The few fields we write are encoded by hand here (field numbers from TensorFlow's
`event.proto` / `summary.proto`), so neither TensorFlow nor tensorboard is needed to write
them:

    Event   { double wall_time = 1; int64 step = 2; string file_version = 3;
              Summary summary = 5; }
    Summary { repeated Value value = 1; }
    Value   { string tag = 1; float simple_value = 2; Image image = 4; }
    Image   { int32 height = 1; int32 width = 2; int32 colorspace = 3;
              bytes encoded_image_string = 4; }
"""
from __future__ import annotations

import os
import socket
import struct
import time

# ----------------------------------------------------------------------------- CRC-32C


def _crc_table() -> list[int]:
  poly = 0x82F63B78
  table = []
  for i in range(256):
    c = i
    for _ in range(8):
      c = (c >> 1) ^ poly if c & 1 else c >> 1
    table.append(c)
  return table


_TABLE = _crc_table()


def crc32c(data: bytes) -> int:
  crc = 0xFFFFFFFF
  for b in data:
    crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
  return crc ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
  c = crc32c(data)
  return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord(payload: bytes) -> bytes:
  header = struct.pack("<Q", len(payload))
  return (header + struct.pack("<I", masked_crc(header)) + payload +
          struct.pack("<I", masked_crc(payload)))


def read_tfrecords(path: str) -> list[bytes]:
  """Payloads of a TFRecord file; raises ValueError on a CRC mismatch (for tests / tools)."""
  out = []
  with open(path, "rb") as f:
    data = f.read()
  i = 0
  while i < len(data):
    header = data[i:i + 8]
    (n,) = struct.unpack("<Q", header)
    (hc,) = struct.unpack("<I", data[i + 8:i + 12])
    if hc != masked_crc(header):
      raise ValueError(f"{path}: bad length CRC at byte {i}")
    payload = data[i + 12:i + 12 + n]
    (pc,) = struct.unpack("<I", data[i + 12 + n:i + 16 + n])
    if pc != masked_crc(payload):
      raise ValueError(f"{path}: bad payload CRC at byte {i}")
    out.append(payload)
    i += 16 + n
  return out


# ------------------------------------------------------------------------ protobuf bits


def _varint(n: int) -> bytes:
  n &= (1 << 64) - 1
  out = bytearray()
  while True:
    b = n & 0x7F
    n >>= 7
    if n:
      out.append(b | 0x80)
    else:
      out.append(b)
      return bytes(out)


def _field_bytes(num: int, payload: bytes) -> bytes:
  return _varint((num << 3) | 2) + _varint(len(payload)) + payload


def _field_varint(num: int, value: int) -> bytes:
  return _varint(num << 3) + _varint(value)


def _event(step: int, *, summary: bytes | None = None, file_version: str | None = None,
           wall_time: float | None = None) -> bytes:
  out = _varint((1 << 3) | 1) + struct.pack("<d", time.time() if wall_time is None
                                            else wall_time)
  out += _field_varint(2, int(step))
  if file_version is not None:
    out += _field_bytes(3, file_version.encode())
  if summary is not None:
    out += _field_bytes(5, summary)
  return out


def scalar_value(tag: str, value: float) -> bytes:
  return _field_bytes(1, _field_bytes(1, tag.encode()) + _varint((2 << 3) | 5) +
                      struct.pack("<f", float(value)))


def image_value(tag: str, png: bytes, height: int, width: int, channels: int = 3) -> bytes:
  img = (_field_varint(1, height) + _field_varint(2, width) + _field_varint(3, channels) +
         _field_bytes(4, png))
  return _field_bytes(1, _field_bytes(1, tag.encode()) + _field_bytes(4, img))


class EventWriter:
  """Appends scalar / image summaries to one event file in `logdir`."""

  def __init__(self, logdir: str):
    os.makedirs(logdir, exist_ok=True)
    name = (f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}."
            f"{os.getpid()}.vitron")
    self.path = os.path.join(logdir, name)
    self._f = open(self.path, "ab")  # pylint: disable=consider-using-with
    self._f.write(tfrecord(_event(0, file_version="brain.Event:2")))
    self._f.flush()

  def scalars(self, step: int, values: dict[str, float]) -> None:
    summary = b"".join(scalar_value(k, v) for k, v in values.items())
    self._f.write(tfrecord(_event(step, summary=summary)))

  def image(self, step: int, tag: str, png: bytes, height: int, width: int) -> None:
    self._f.write(tfrecord(_event(step, summary=image_value(tag, png, height, width))))

  def flush(self) -> None:
    self._f.flush()

  def close(self) -> None:
    if not self._f.closed:
      self._f.flush()
      self._f.close()
