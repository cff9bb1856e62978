"""Artifact ids re-derived from docs/formats.md alone ("Artifact ids").

This file carries its own BLAKE3 (a transcription of the specification's
reference implementation: nothing of tcast's C code), builds the canonical
table bytes from the documented layout, and checks that a real daemon names
the same content the same way; plus the pinned tiny vector shared with
tests/unit/test_canon.c, and the rule that different bytes never share an id
(the old XXH3 ids could be made to collide).
"""

import json
import struct

import pytest

# ------------------------------------------------------- BLAKE3 (spec)

_IV = [0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A,
       0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19]
_PERM = [2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8]
_START, _END, _PARENT, _ROOT = 1, 2, 4, 8
_M = 0xFFFFFFFF


def _g(s, a, b, c, d, x, y):
    s[a] = (s[a] + s[b] + x) & _M
    s[d] = ((s[d] ^ s[a]) >> 16 | (s[d] ^ s[a]) << 16) & _M
    s[c] = (s[c] + s[d]) & _M
    s[b] = ((s[b] ^ s[c]) >> 12 | (s[b] ^ s[c]) << 20) & _M
    s[a] = (s[a] + s[b] + y) & _M
    s[d] = ((s[d] ^ s[a]) >> 8 | (s[d] ^ s[a]) << 24) & _M
    s[c] = (s[c] + s[d]) & _M
    s[b] = ((s[b] ^ s[c]) >> 7 | (s[b] ^ s[c]) << 25) & _M


def _compress(cv, block, counter, blen, flags):
    m = list(struct.unpack("<16I", block.ljust(64, b"\0")))
    s = list(cv) + _IV[:4] + [counter & _M, counter >> 32, blen, flags]
    for r in range(7):
        _g(s, 0, 4, 8, 12, m[0], m[1])
        _g(s, 1, 5, 9, 13, m[2], m[3])
        _g(s, 2, 6, 10, 14, m[4], m[5])
        _g(s, 3, 7, 11, 15, m[6], m[7])
        _g(s, 0, 5, 10, 15, m[8], m[9])
        _g(s, 1, 6, 11, 12, m[10], m[11])
        _g(s, 2, 7, 8, 13, m[12], m[13])
        _g(s, 3, 4, 9, 14, m[14], m[15])
        m = [m[i] for i in _PERM]
    return [s[i] ^ s[i + 8] for i in range(8)]


def _chunk_output(data, index):
    """(cv, last block, counter, len, flags) of one 1 KiB chunk, unfinished."""
    blocks = [data[i:i + 64] for i in range(0, len(data), 64)] or [b""]
    cv = _IV
    for n, b in enumerate(blocks[:-1]):
        cv = _compress(cv, b, index, 64, _START if n == 0 else 0)
    last = blocks[-1]
    flags = _END | (_START if len(blocks) == 1 else 0)
    return (cv, last, index, len(last), flags)


def _finish(out, root):
    cv, block, counter, blen, flags = out
    return _compress(cv, block, counter, blen, flags | (_ROOT if root else 0))


def _tree(data, first_chunk, root):
    nchunks = max(1, -(-len(data) // 1024))
    if nchunks == 1:
        return _finish(_chunk_output(data, first_chunk), root)
    left = 1 << ((nchunks - 1).bit_length() - 1)  # largest power of 2 < n
    lcv = _tree(data[:left * 1024], first_chunk, False)
    rcv = _tree(data[left * 1024:], first_chunk + left, False)
    block = struct.pack("<8I", *lcv) + struct.pack("<8I", *rcv)
    return _compress(_IV, block, 0, 64, _PARENT | (_ROOT if root else 0))


def blake3(data: bytes) -> bytes:
    return struct.pack("<8I", *_tree(bytes(data), 0, True))


def test_blake3_reference_vectors():
    # BLAKE3's official vectors: input bytes i % 251.
    inp = bytes(i % 251 for i in range(3073))
    want = {
        0: "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
        1: "2d3adedff11b61f14c886e35afa036736dcd87a74d27b5c1510225d0f592e213",
        1023: "10108970eeda3eb932baac1428c7a2163b0e924c9a9e25b35bba72b28f70bd11",
        1024: "42214739f095a406f3fc83deb889744ac00df831c10daa55189b5d121c855af7",
        1025: "d00278ae47eb27b34faecf67b4fe263f82d5412916c1ffd97c8cb7fb814b8444",
    }
    for n, h in want.items():
        assert blake3(inp[:n]).hex() == h, n


# ------------------------------------------------- canonical form (doc)

DTYPE_BYTES = {"F32": 4, "U8": 1, "BF16": 2, "I64": 8}
CHUNK = 4 << 20


def canonical(tensors, total, meta):
    """tensors: [(name, dtype, shape, offset, nbytes)] in artifact order."""
    b = bytearray(b"tcast-table\n")
    b += struct.pack("<IQI", 1, total, len(tensors))
    for name, dt, shape, off, nb in tensors:
        nm = name.encode()
        b += struct.pack("<I", len(nm)) + nm
        b += struct.pack("<B", len(dt)) + dt.encode()
        b += struct.pack("<B", len(shape)) + b"".join(struct.pack("<Q", d) for d in shape)
        b += struct.pack("<QQ", off, nb)
    b += struct.pack("<I", len(meta))
    for k in sorted(meta, key=lambda k: k.encode()):
        kb, vb = k.encode(), meta[k].encode()
        b += struct.pack("<I", len(kb)) + kb + struct.pack("<I", len(vb)) + vb
    return bytes(b)


def expected_id(tensors, data, meta):
    """tensors: [(name, dtype, shape, raw bytes)] in file order."""
    rows, space, off = [], bytearray(), 0
    for name, dt, shape, raw in tensors:
        off = -(-off // 256) * 256  # TC_ALIGN
        space += b"\0" * (off - len(space)) + raw
        rows.append((name, dt, shape, off, len(raw)))
        off += len(raw)
    chunks = b"".join(blake3(space[i:i + CHUNK]) for i in range(0, len(space), CHUNK))
    return "tc2:" + blake3(canonical(rows, len(space), meta) + chunks).hex()


def write_st(path, tensors, meta):
    hdr, off = {}, 0
    if meta:
        hdr["__metadata__"] = meta
    for name, dt, shape, raw in tensors:
        hdr[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + len(raw)]}
        off += len(raw)
    h = json.dumps(hdr).encode()
    h += b" " * (-len(h) % 8)
    path.write_bytes(struct.pack("<Q", len(h)) + h + b"".join(t[3] for t in tensors))


TINY = [("a", "F32", [2], struct.pack("<2f", 1.0, 2.0)), ("b", "U8", [3], b"\x01\x02\x03")]
TINY_META = {"z": "1", "format": "pt"}
TINY_ID = "tc2:37815ee52fe011d82c50a380302d5ad0c6ecf458b739c74dc8c8c83ed7b70eeb"


def test_tiny_vector_from_the_document():
    # The same vector tests/unit/test_canon.c pins, computed from the doc.
    assert expected_id(TINY, None, TINY_META) == TINY_ID


def test_daemon_names_the_tiny_artifact(tc, tmp_path):
    p = tmp_path / "tiny.safetensors"
    write_st(p, TINY, TINY_META)
    assert tc.import_from_disk(p).artifact_id == TINY_ID


def test_daemon_ids_match_the_document_on_many_chunks(tc, tmp_path):
    # Two chunks (the last one short), a BF16 tensor after a gap.
    big = bytes((i * 2654435761 >> 13) & 0xFF for i in range(4 << 20 | 12345))
    t = [("w", "U8", [len(big)], big), ("v", "BF16", [3, 2], bytes(range(12)))]
    p = tmp_path / "big.safetensors"
    write_st(p, t, {})
    assert tc.import_from_disk(p).artifact_id == expected_id(t, None, {})


def test_different_bytes_never_share_an_id(tc, tmp_path):
    # Same table, 8 bytes apart (the shape of the XXH3 collision): two
    # artifacts, neither deduplicated onto the other, each with its bytes.
    import numpy as np

    base = bytearray(range(256)) * 64
    other = bytearray(base)
    other[4096:4104] = b"\xde\xad\xbe\xef\x01\x02\x03\x04"
    ids = []
    for i, raw in enumerate((base, other)):
        p = tmp_path / f"c{i}.safetensors"
        write_st(p, [("x", "U8", [len(raw)], bytes(raw))], {})
        art = tc.import_from_disk(p)
        ids.append(art.artifact_id)
        got = art.tensor_dict(framework="numpy")["x"]
        assert np.asarray(got).tobytes() == bytes(raw)
    assert ids[0] != ids[1]
    assert len(ids[0]) == 68 and ids[0].startswith("tc2:")
