"""Read an offline W&B run's history back from its ``.wandb`` file, for the sink tests.

wandb >= 0.2x no longer ships a Python reader for these files (``wandb.sdk.internal.datastore``
is gone; its Go core writes them), so this reads the container by hand and decodes every
record with wandb's own protocol classes (``wandb.proto.wandb_internal_pb2.Record``). The
container is LevelDB's log format behind a 7-byte header (``:W&B``, magic 0xBEE1, version 0):
32 KiB blocks of chunks, each ``crc32c (4) | length (2, little-endian) | type (1)`` then the
bytes; type 1 is a whole record, 2/3/4 its first/middle/last pieces; a block's last < 7 bytes
are padding."""

import json
import struct
from pathlib import Path

BLOCK, HEADER, CHUNK = 32768, 7, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path):
    """The protocol records of a ``.wandb`` file, in order."""
    from wandb.proto.wandb_internal_pb2 import Record

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B" and struct.unpack("<HB", data[4:7]) == (0xBEE1, 0), "not a .wandb file"
    pos, pieces = HEADER, b""
    while pos + CHUNK <= len(data):
        if BLOCK - pos % BLOCK < CHUNK:  # padding at a block's end
            pos += BLOCK - pos % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + CHUNK])
        body = data[pos + CHUNK:pos + CHUNK + length]
        pos += CHUNK + length
        if kind == 0 and length == 0:
            break
        pieces = body if kind in (FULL, FIRST) else pieces + body
        if kind in (FULL, LAST):
            record = Record()
            record.ParseFromString(pieces)
            yield record


def history(folder):
    """{step: {key: value}} of the one offline run under ``folder`` (``<folder>/wandb/offline-run-*``)."""
    (path,) = Path(folder).glob("wandb/offline-run-*/run-*.wandb")
    out = {}
    for record in records(path):
        if record.WhichOneof("record_type") == "history":
            items = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            step = int(items.pop("_step")) if "_step" in items else record.history.step.num
            out.setdefault(step, {}).update({k: v for k, v in items.items() if not k.startswith("_")})
    return out


def config(folder):
    """The run's config as key -> value (from its config records)."""
    (path,) = Path(folder).glob("wandb/offline-run-*/run-*.wandb")
    out = {}
    for record in records(path):
        if record.WhichOneof("record_type") == "config":
            out.update({item.key: json.loads(item.value_json) for item in record.config.update})
        if record.WhichOneof("record_type") == "run":
            out.update({item.key: json.loads(item.value_json) for item in record.run.config.update})
    return out
