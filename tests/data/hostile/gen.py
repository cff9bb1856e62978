#!/usr/bin/env python3
"""Generate the hostile safetensors / HF-index corpus and its README.

Each case is hand-written for one item of docs/hostile-inputs.md (1.1, 1.2)
and recorded with the error tcast must return (tc_err_name) and a fragment
of the message, which names the offending thing.  tests/unit/test_format.c
reads the README table and checks every row; the fuzzers use the files as
seeds.  Cases that need a live filesystem object (FIFO, socket, device,
symlink loop, permission, sparse 100 MB file, rlimit) or a big input
(count bombs, 1 MB names, 10^5 shards) are built by test_format.c itself
and listed at the end of the README.

Run from anywhere: python3 tests/data/hostile/gen.py (rewrites st/, idx/
and README.md next to this script).
"""
import json
import os
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
ROWS = []  # (path, code, fragment, item, description)


def hdr(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def t(dtype, shape, b, e):
    return {"dtype": dtype, "shape": shape, "data_offsets": [b, e]}


def st_bytes(header, data=b"", n=None):
    if isinstance(header, str):
        header = header.encode()
    if n is None:
        n = len(header)
    return struct.pack("<Q", n) + header + data


def case(name, content, code, frag, item, desc):
    path = "st/" + name + ".safetensors"
    with open(os.path.join(HERE, path), "wb") as f:
        f.write(content)
    ROWS.append((path, code, frag, item, desc))


def valid_file(tensors, meta=None):
    """A well-formed file in reference-writer order: (name, dtype, shape)."""
    bits = {"BOOL": 8, "U8": 8, "I8": 8, "F16": 16, "BF16": 16, "F32": 32,
            "I64": 64, "F64": 64}
    h = {}
    if meta is not None:
        h["__metadata__"] = meta
    off = 0
    for name, dtype, shape in tensors:
        n = 1
        for d in shape:
            n *= d
        nb = n * bits[dtype] // 8
        h[name] = t(dtype, shape, off, off + nb)
        off += nb
    raw = hdr(h)
    raw += b" " * ((8 - len(raw) % 8) % 8)
    return st_bytes(raw, bytes(range(256)) * (off // 256) + bytes(off % 256))


F32_8 = t("F32", [2], 0, 8)
OK1 = hdr({"a": F32_8})


def st_cases():
    # 1.1.1 files shorter than the 8-byte prefix
    for n in (0, 1, 7):
        case("len_%d" % n, b"\x08" * n, "TC_EBADFILE",
             "file is %d bytes, shorter than the 8-byte header length" % n,
             "1.1.1", "file of %d bytes" % n)
    # 1.1.2
    case("n_0", st_bytes(b""), "TC_EBADFILE", "header is empty", "1.1.2",
         "N = 0")
    case("n_1", st_bytes(b"{"), "TC_EBADFILE",
         "expected a tensor name, found end of header", "1.1.2", "N = 1")
    case("n_no_data_no_tensors_ok", st_bytes(b"{}"), "OK", "0 tensors",
         "1.1.2", "N = file_len - 8, no tensors: valid")
    case("n_no_data_with_tensor", st_bytes(OK1), "TC_EBADFILE",
         "tensor 'a': data_offsets [0, 8]: past the end of the file",
         "1.1.2", "N = file_len - 8 but a tensor needs data")
    # 1.1.3
    case("n_past_end", st_bytes(OK1, b"\0" * 8, n=1000), "TC_EBADFILE",
         "header length 1000 runs past the end of the file", "1.1.3",
         "N > file_len - 8")
    for nm, n in (("n_2pow63", 1 << 63), ("n_2pow64m1", (1 << 64) - 1),
                  ("n_2pow64m8", (1 << 64) - 8)):
        case(nm, st_bytes(OK1, b"\0" * 8, n=n), "TC_EBADFILE",
             "header length %d runs past the end" % n, "1.1.3",
             "N = %#x (N + 8 wraps)" % n)
    # 1.1.4: the cap needs a > 100 MB file: built sparse by test_format.c.
    case("n_cap_plus_1_small_file", st_bytes(OK1, b"\0" * 8, n=100000001),
         "TC_EBADFILE", "header length 100000001 runs past the end",
         "1.1.4", "N = cap + 1 in a small file: the file bound comes first")
    # 1.1.5 invalid UTF-8
    case("utf8_overlong", st_bytes(b'{"\xc0\xaf":{}}'), "TC_EBADFILE",
         "invalid UTF-8 at header byte 2", "1.1.5", "overlong '/' in a name")
    case("utf8_surrogate", st_bytes(b'{"\xed\xa0\x80":{}}'), "TC_EBADFILE",
         "invalid UTF-8 at header byte 2", "1.1.5",
         "UTF-8-encoded surrogate U+D800")
    case("utf8_above_max", st_bytes(b'{"\xf4\x90\x80\x80":{}}'),
         "TC_EBADFILE", "invalid UTF-8 at header byte 2", "1.1.5",
         "code point above U+10FFFF")
    case("utf8_cut_at_end", st_bytes(b'{"a\xe2\x82'), "TC_EBADFILE",
         "invalid UTF-8 at header byte 3", "1.1.5",
         "multibyte sequence cut by the end of the header")
    case("utf8_in_metadata", st_bytes(b'{"__metadata__":{"k":"\xff"}}'),
         "TC_EBADFILE", "invalid UTF-8 at header byte 22", "1.1.5",
         "invalid byte in a metadata value")
    # 1.1.6 what comes before '{'
    case("bom", st_bytes(b"\xef\xbb\xbf" + OK1, b"\0" * 8), "TC_EBADFILE",
         "byte order mark before '{'", "1.1.6", "UTF-8 BOM")
    case("leading_bracket", st_bytes(b"[]"), "TC_EBADFILE",
         "expected '{' to open the header, found '['", "1.1.6",
         "top-level array")
    case("leading_number", st_bytes(b"42"), "TC_EBADFILE",
         "expected '{' to open the header, found '4'", "1.1.6",
         "bare number")
    case("leading_spaces_ok", st_bytes(b"   " + OK1, b"\0" * 8), "OK",
         "1 tensor,", "1.1.6", "leading spaces: accepted")
    case("leading_json_ws_ok", st_bytes(b"\n\t\r " + OK1 + b"\n", b"\0" * 8),
         "OK", "1 tensor,", "1.1.6",
         "leading and trailing JSON whitespace: accepted")
    # 1.1.7 NUL bytes
    case("nul_in_name", st_bytes(b'{"a\0b":{}}'), "TC_EBADFILE",
         "NUL byte in a string at header byte 3", "1.1.7", "raw NUL in a name")
    case("nul_padding", st_bytes(OK1 + b"\0\0\0\0", b"\0" * 8), "TC_EBADFILE",
         "NUL padding after the header object", "1.1.7",
         "NUL padding instead of spaces")
    case("space_padding_ok", st_bytes(OK1 + b"    ", b"\0" * 8), "OK",
         "1 tensor,", "1.1.7", "space padding: accepted")
    # 1.1.8
    case("trailing_garbage", st_bytes(OK1 + b"xyz", b"\0" * 8),
         "TC_EBADFILE", "trailing bytes after the header object at header byte %d"
         % len(OK1), "1.1.8", "garbage after '}'")
    case("two_objects", st_bytes(OK1 + b"{}", b"\0" * 8), "TC_EBADFILE",
         "trailing bytes after the header object", "1.1.8",
         "two JSON objects back to back")
    # 1.1.9 deep nesting (the parser has no recursion; 1e5 levels in C)
    case("deep_top", st_bytes(b"[" * 1000), "TC_EBADFILE",
         "expected '{' to open the header, found '['", "1.1.9",
         "1000 nested arrays at the top")
    case("deep_shape", st_bytes(b'{"a":{"dtype":"F32","shape":' + b"[" * 1000),
         "TC_EBADFILE", "tensor 'a': shape: expected an integer", "1.1.9",
         "1000 nested arrays in a shape")
    case("deep_entry", st_bytes(b'{"a":' + b'{"a":' * 1000), "TC_EBADFILE",
         "tensor 'a': unknown field 'a'", "1.1.9",
         "1000 nested objects in an entry")
    case("deep_metadata", st_bytes(b'{"__metadata__":{"k":' + b"[" * 1000),
         "TC_EBADFILE", "__metadata__ 'k': value is not a string", "1.1.9",
         "1000 nested arrays in metadata")
    # 1.1.10 numbers and huge strings
    pre = b'{"a":{"dtype":"F32","shape":[2],"data_offsets":'
    first, second = len(pre) + 1, len(pre) + 3  # "[" then "0,"
    num = [("num_1e999", b"[0,1e999]", "number at header byte %d is not an integer" % second),
           ("num_real", b"[0,8.0]", "number at header byte %d is not an integer" % second),
           ("num_leading_zero", b"[00,8]", "invalid JSON number with a leading zero at header byte %d" % first),
           ("num_plus", b"[+0,8]", "expected an integer at header byte %d, found '+'" % first),
           ("num_huge", b"[0,99999999999999999999]", "integer at header byte %d is larger than 2^63-1" % second),
           ("num_2pow63", b"[0,9223372036854775808]", "integer at header byte %d is larger than 2^63-1" % second),
           ("num_negative_offset", b"[-4,8]", "negative number at header byte %d" % first),
           ("num_neg_zero", b"[-0,8]", "negative number at header byte %d" % first)]
    for nm, arr, frag in num:
        case(nm, st_bytes(pre + arr + b"}}", b"\0" * 8), "TC_EBADFILE",
             "tensor 'a': data_offsets: " + frag, "1.1.10", "data_offsets " + arr.decode())
    case("num_negative_dim", st_bytes(b'{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}}'),
         "TC_EBADFILE", "tensor 'a': shape: negative number", "1.1.10",
         "negative dimension")
    case("huge_dtype_string", st_bytes(b'{"a":{"dtype":"' + b"A" * 20000 + b'"}}'),
         "TC_EBADDTYPE", "tensor 'a': unknown dtype 'AAAA", "1.1.10",
         "a 20,000-byte dtype string (quoted, cut in the message)")
    # 1.1.11 escapes
    case("escaped_nul_name", st_bytes(b'{"a\\u0000b":{}}'), "TC_EBADFILE",
         "\\u0000 (NUL) in a string at header byte 3", "1.1.11",
         "\\u0000 in a tensor name")
    case("escaped_nul_metadata", st_bytes(b'{"__metadata__":{"k":"\\u0000"}}'),
         "TC_EBADFILE", "\\u0000 (NUL) in a string", "1.1.11",
         "\\u0000 in a metadata value (C strings; jansson would accept)")
    case("bad_u_escape", st_bytes(b'{"\\u12G4":{}}'), "TC_EBADFILE",
         "invalid \\u escape at header byte 2", "1.1.11", "\\u12G4")
    case("lone_high_surrogate", st_bytes(b'{"\\ud800x":{}}'), "TC_EBADFILE",
         "unpaired surrogate escape at header byte 2", "1.1.11",
         "\\ud800 not followed by a low surrogate")
    case("lone_low_surrogate", st_bytes(b'{"\\udc00":{}}'), "TC_EBADFILE",
         "unpaired surrogate escape", "1.1.11", "\\udc00 alone")
    case("bad_escape", st_bytes(b'{"\\q":{}}'), "TC_EBADFILE",
         "invalid escape at header byte 2", "1.1.11", "\\q")
    case("raw_control_char", st_bytes(b'{"a\x01b":{}}'), "TC_EBADFILE",
         "control character 0x01 in a string at header byte 3", "1.1.11",
         "raw 0x01 in a name")
    case("escaped_names_ok",
         st_bytes(b'{"caf\\u00e9":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
                  b'"\\ud83d\\ude00\\n\\u001b[31m":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}',
                  b"\0\0"), "OK", "2 tensors,", "1.1.11",
         "escaped names, a surrogate pair, control characters as escapes: accepted")
    # 1.1.12 duplicates
    case("dup_tensor", st_bytes(b'{"a":' + hdr(F32_8) + b',"a":' + hdr(F32_8) + b"}",
                                b"\0" * 8), "TC_EBADFILE", "duplicate tensor 'a'",
         "1.1.12", "the same tensor twice")
    case("dup_tensor_via_escape",
         st_bytes(b'{"a":' + hdr(t("F32", [2], 0, 8)) + b',"\\u0061":' +
                  hdr(t("F32", [2], 8, 16)) + b"}", b"\0" * 16),
         "TC_EBADFILE", "duplicate tensor 'a'", "1.1.12",
         "\"a\" and \"\\u0061\"")
    case("dup_metadata", st_bytes(b'{"__metadata__":{},"__metadata__":{}}'),
         "TC_EBADFILE", "duplicate '__metadata__'", "1.1.12",
         "__metadata__ twice")
    case("dup_metadata_key", st_bytes(b'{"__metadata__":{"k":"1","k":"2"}}'),
         "TC_EBADFILE", "duplicate __metadata__ key 'k'", "1.1.12",
         "a metadata key twice")
    case("dup_field", st_bytes(b'{"a":{"dtype":"F32","dtype":"F32"}}'),
         "TC_EBADFILE", "tensor 'a': duplicate field 'dtype'", "1.1.12",
         "dtype twice in one entry")
    # 1.1.13 __metadata__ string -> string only
    for nm, v in (("meta_nested", b'{"x":"y"}'), ("meta_number", b"1"),
                  ("meta_null", b"null"), ("meta_bool", b"true")):
        case(nm, st_bytes(b'{"__metadata__":{"k":' + v + b"}}"), "TC_EBADFILE",
             "__metadata__ 'k': value is not a string", "1.1.13",
             "metadata value " + v.decode())
    case("meta_not_object", st_bytes(b'{"__metadata__":["k","v"]}'),
         "TC_EBADFILE", "__metadata__ is not an object", "1.1.13",
         "__metadata__ is an array")
    case("meta_ok", valid_file([("a", "F32", [2])], {"format": "pt", "": "empty key"}),
         "OK", "1 tensor,", "1.1.13", "metadata with an empty key: accepted")
    # 1.1.14 fields
    for f in ("dtype", "shape", "data_offsets"):
        e = dict(F32_8)
        del e[f]
        case("missing_" + f, st_bytes(hdr({"a": e}), b"\0" * 8), "TC_EBADFILE",
             "tensor 'a': missing field '%s'" % f, "1.1.14", "no " + f)
    e = dict(F32_8)
    e["offsets"] = [0, 8]
    case("extra_field", st_bytes(hdr({"a": e}), b"\0" * 8), "TC_EBADFILE",
         "tensor 'a': unknown field 'offsets'", "1.1.14",
         "an extra field (the README's 'offsets' spelling)")
    case("shape_string", st_bytes(b'{"a":{"dtype":"F32","shape":"[2]","data_offsets":[0,8]}}', b"\0" * 8),
         "TC_EBADFILE", "tensor 'a': shape is not an array", "1.1.14",
         "shape as a string")
    for nm, arr, frag in (("offsets_zero", b"[]", "data_offsets has 0 elements, not 2"),
                          ("offsets_one", b"[0]", "data_offsets has 1 element, not 2"),
                          ("offsets_three", b"[0,8,8]", "data_offsets has more than 2 elements")):
        case(nm, st_bytes(b'{"a":{"dtype":"F32","shape":[2],"data_offsets":' + arr + b"}}", b"\0" * 8),
             "TC_EBADFILE", "tensor 'a': " + frag, "1.1.14", "data_offsets " + arr.decode())
    case("entry_not_object", st_bytes(b'{"a":[1,2]}'), "TC_EBADFILE",
         "tensor 'a': entry is not an object", "1.1.14", "entry is an array")
    case("dtype_not_string", st_bytes(b'{"a":{"dtype":32}}'), "TC_EBADFILE",
         "tensor 'a': dtype is not a string", "1.1.14", "dtype is a number")
    # 1.1.15 dtypes
    for nm, d in (("dtype_unknown", "F128"), ("dtype_lowercase", "f32"),
                  ("dtype_empty", "")):
        case(nm, st_bytes(hdr({"a": t(d, [2], 0, 8)}), b"\0" * 8), "TC_EBADDTYPE",
             "tensor 'a': unknown dtype '%s'" % d, "1.1.15", "dtype %r" % d)
    case("f4_odd", st_bytes(hdr({"a": t("F4", [3], 0, 1)}), b"\0"), "TC_EBADFILE",
         "tensor 'a': shape [3]: 3 F4 elements are 12 bits, not a whole number of bytes",
         "1.1.15", "3 F4 values (12 bits)")
    case("f6_odd", st_bytes(hdr({"a": t("F6_E2M3", [3], 0, 2)}), b"\0\0"),
         "TC_EBADFILE", "3 F6_E2M3 elements are 18 bits", "1.1.15",
         "3 F6_E2M3 values (18 bits)")
    case("f4_f6_ok", st_bytes(hdr({"a": t("F4", [2, 3], 0, 3),
                                   "b": t("F6_E3M2", [4], 3, 6)}), b"\0" * 6),
         "OK", "dtypes F4,F6_E3M2", "1.1.15", "whole-byte F4 and F6: accepted")
    case("bool_wide", st_bytes(hdr({"a": t("BOOL", [4], 0, 8)}), b"\0" * 8),
         "TC_EBADFILE", "tensor 'a': data_offsets [0, 8] hold 8 bytes but BOOL [4] needs 4",
         "1.1.15", "BOOL at 2 bytes per element")
    # 1.1.16 names
    case("empty_name", st_bytes(hdr({"": F32_8}), b"\0" * 8), "TC_EBADFILE",
         "empty tensor name", "1.1.16", "empty name")
    long = "n" * 1025
    case("name_1025", st_bytes(hdr({long: F32_8}), b"\0" * 8), "TC_ELIMIT",
         "is 1025 bytes, longer than 1024", "1.1.16",
         "a 1025-byte name (1 MB in test_format.c)")
    case("name_paths_ok", valid_file([("../../x/./y", "U8", [1]),
                                      ("a/b.c", "U8", [1])]),
         "OK", "2 tensors,", "1.1.16",
         "names with '/', '..', '.': accepted (names are not paths)")
    # 1.1.18 - 1.1.19 overflow
    case("shape_wraps_to_0", st_bytes(hdr({"a": t("F32", [4294967296, 4294967296], 0, 0)})),
         "TC_EBADFILE", "tensor 'a': shape [4294967296, 4294967296]: element count overflows 64 bits",
         "1.1.18", "2^32 x 2^32 elements wrap to 0")
    case("shape_wraps_to_16", st_bytes(hdr({"a": t("F32", [4194305, 4194305, 211106198978564], 0, 16)}),
                                       b"\0" * 16),
         "TC_EBADFILE", "shape [4194305, 4194305, 211106198978564]: element count overflows 64 bits",
         "1.1.18", "element count wraps so that size = 16 = end - begin")
    case("bits_overflow", st_bytes(hdr({"a": t("F32", [2305843009213693952], 0, 0)})),
         "TC_EBADFILE", "2305843009213693952 F32 elements overflow 64 bits of size",
         "1.1.19", "2^61 F32 elements: count fits, bits do not")
    case("bits_overflow_to_0", st_bytes(hdr({"a": t("I64", [288230376151711744], 0, 0)})),
         "TC_EBADFILE", "I64 elements overflow 64 bits of size", "1.1.19",
         "2^58 I64 elements: 2^64 bits wrap to 0")
    # 1.1.20 rank
    case("scalar_and_empty_ok", st_bytes(hdr({"e": t("F32", [0, 7], 0, 0),
                                              "s": t("F32", [], 0, 4)}), b"\0" * 4),
         "OK", "2 tensors, 4 bytes", "1.1.20", "rank 0 (1 element) and a 0 dimension")
    case("rank_17", st_bytes(hdr({"a": t("U8", [1] * 17, 0, 1)}), b"\0"), "TC_ELIMIT",
         "tensor 'a': shape has more than 16 dimensions", "1.1.20", "rank 17")
    case("rank_1000", st_bytes(hdr({"a": t("U8", [1] * 1000, 0, 1)}), b"\0"), "TC_ELIMIT",
         "shape has more than 16 dimensions", "1.1.20", "rank 1000 (rank 65536 in test_format.c)")
    # 1.1.21
    case("end_before_begin", st_bytes(hdr({"x.weight": t("F32", [1], 8, 4)}), b"\0" * 8),
         "TC_EBADFILE", "tensor 'x.weight': data_offsets [8, 4]: end before begin",
         "1.1.21", "end < begin")
    case("empty_range_nonempty_shape", st_bytes(hdr({"a": t("F32", [2], 0, 0)})),
         "TC_EBADFILE", "data_offsets [0, 0] hold 0 bytes but F32 [2] needs 8", "1.1.21",
         "begin == end with 2 elements")
    case("range_too_long", st_bytes(hdr({"a": t("F32", [2], 0, 12)}), b"\0" * 12),
         "TC_EBADFILE", "hold 12 bytes but F32 [2] needs 8", "1.1.21", "end - begin > nbytes")
    case("range_too_short", st_bytes(hdr({"a": t("F32", [2], 0, 4)}), b"\0" * 4),
         "TC_EBADFILE", "hold 4 bytes but F32 [2] needs 8", "1.1.21", "end - begin < nbytes")
    # 1.1.22 gaps
    case("hole_first", st_bytes(hdr({"a": t("F32", [2], 4, 12)}), b"\0" * 12),
         "TC_EBADFILE", "tensor 'a': data_offsets [4, 12]: first tensor starts at 4, not 0",
         "1.1.22", "first tensor at 4")
    case("hole_between", st_bytes(hdr({"a": t("F32", [2], 0, 8), "b": t("F32", [2], 12, 20)}),
                                  b"\0" * 20),
         "TC_EBADFILE", "tensor 'b': data_offsets [12, 20]: hole of 4 bytes after tensor 'a'",
         "1.1.22", "4-byte hole between tensors")
    case("trailer_zip", st_bytes(OK1, b"\0" * 8 + b"PK\x03\x04" + b"\0" * 26),
         "TC_EBADFILE", "30 bytes after the last tensor", "1.1.22",
         "a ZIP header appended after the data (polyglot)")
    # 1.1.23 overlaps
    case("overlap_partial", st_bytes(hdr({"a": t("F32", [2], 0, 8), "b": t("F32", [2], 4, 12)}),
                                     b"\0" * 12),
         "TC_EBADFILE", "tensor 'b': data_offsets [4, 12]: overlaps tensor 'a' [0, 8]",
         "1.1.23", "partial overlap")
    case("overlap_contained", st_bytes(hdr({"a": t("F32", [4], 0, 16), "b": t("F32", [1], 4, 8)}),
                                       b"\0" * 16),
         "TC_EBADFILE", "tensor 'b': data_offsets [4, 8]: overlaps tensor 'a' [0, 16]",
         "1.1.23", "one tensor inside another")
    case("overlap_identical", st_bytes(hdr({"a": t("F32", [2], 0, 8), "b": t("F32", [2], 0, 8)}),
                                       b"\0" * 8),
         "TC_EBADFILE", "tensor 'b': data_offsets [0, 8]: overlaps tensor 'a' [0, 8]",
         "1.1.23", "identical ranges")
    case("zero_size_inside", st_bytes(hdr({"a": t("F32", [2], 0, 8), "z": t("F32", [0], 4, 4)}),
                                      b"\0" * 8),
         "TC_EBADFILE", "tensor 'z': data_offsets [4, 4]: overlaps tensor 'a' [0, 8]",
         "1.1.23", "zero-size tensor inside another tensor's range")
    case("zero_size_boundary_ok", st_bytes(hdr({"a": t("F32", [2], 0, 8), "z": t("F32", [0], 8, 8),
                                                "b": t("F32", [2], 8, 16), "y": t("F32", [0], 0, 0)}),
                                           b"\0" * 16),
         "OK", "4 tensors, 16 bytes", "1.1.23",
         "zero-size tensors where begin == end == previous end: accepted")
    # 1.1.24
    case("past_eof", st_bytes(OK1, b"\0" * 4), "TC_EBADFILE",
         "tensor 'a': data_offsets [0, 8]: past the end of the file (data section is 4 bytes)",
         "1.1.24", "last tensor ends past the file")
    case("file_longer", st_bytes(OK1, b"\0" * 12), "TC_EBADFILE",
         "4 bytes after the last tensor", "1.1.24", "file longer than last_end + 8 + N")
    # 1.1.25
    case("misaligned_ok", st_bytes(hdr({"a": t("U8", [1], 0, 1), "b": t("F32", [1], 1, 5)}),
                                   b"\0" * 5),
         "OK", "2 tensors, 5 bytes", "1.1.25",
         "F32 at data offset 1: legal, accepted (see docs/formats.md)")
    # the brief's example message, on a real-looking file name
    case("model-00002-of-00006", st_bytes(hdr({"x.weight": t("F32", [1], 8, 4)}), b"\0" * 8),
         "TC_EBADFILE",
         "model-00002-of-00006.safetensors: tensor 'x.weight': data_offsets [8, 4]: end before begin",
         "1.1.21", "message names the file, the tensor and the problem")


# ------------------------------------------------------------------ folders

def folder(name, index, shards, code, frag, item, desc, extra=None):
    d = os.path.join(HERE, "idx", name)
    os.makedirs(d, exist_ok=True)
    if index is not None:
        if not isinstance(index, bytes):
            index = json.dumps(index, indent=2).encode()
        with open(os.path.join(d, "model.safetensors.index.json"), "wb") as f:
            f.write(index)
    for fname, content in shards.items():
        if content is None:  # a folder where a file is expected
            os.makedirs(os.path.join(d, fname))
            open(os.path.join(d, fname, ".keep"), "w").close()
            continue
        with open(os.path.join(d, fname), "wb") as f:
            f.write(content)
    for fname, content in (extra or {}).items():
        os.makedirs(os.path.dirname(os.path.join(d, fname)), exist_ok=True)
        with open(os.path.join(d, fname), "wb") as f:
            f.write(content)
    ROWS.append(("idx/" + name, code, frag, item, desc))


def quoted(s):
    """What tc__fmt_quote prints for an ASCII name."""
    return "".join("\\x%02x" % ord(c) if ord(c) < 0x20 or ord(c) == 0x7f or c in "'\\"
                   else c for c in s)


S1 = "model-00001-of-00002.safetensors"
S2 = "model-00002-of-00002.safetensors"


def two_shards():
    return {S1: valid_file([("a", "F32", [2]), ("b", "F32", [3])], {"format": "pt"}),
            S2: valid_file([("c", "BF16", [4])], {"format": "pt"})}


def wm(**kw):
    m = {"a": S1, "b": S1, "c": S2}
    m.update(kw)
    return {"metadata": {"total_size": 28}, "weight_map": m}


def idx_cases():
    folder("ok_two_shards", wm(), two_shards(), "OK",
           "2 files, 3 tensors, 28 bytes, dtypes BF16,F32", "1.2", "valid sharded folder")
    # 1.2.1 escapes
    for nm, shard, frag in (
            ("escape_dotdot", "../x.safetensors", "is a path, not a plain file name"),
            ("escape_etc_passwd", "../../etc/passwd", "is a path, not a plain file name"),
            ("escape_absolute", "/abs/path.safetensors", "is an absolute path"),
            ("escape_subdir", "sub/dir/x.safetensors", "is a path, not a plain file name"),
            ("escape_dot", ".", "is not a file name"),
            ("escape_dotdot_bare", "..", "is not a file name"),
            ("escape_empty", "", "is empty"),
            ("escape_backslash", "..\\x.safetensors", "contains a backslash"),
            ("escape_long", "x" * 300 + ".safetensors", "is longer than 255 bytes"),
            ("escape_control", "a\nb.safetensors", "contains a control character"),
            ("escape_not_safetensors", "config.json", "does not end in '.safetensors'")):
        extra = {}
        if nm == "escape_subdir":
            # the target exists: rejected by name, never opened
            os.makedirs(os.path.join(HERE, "idx", nm, "sub", "dir"))
            extra["sub/dir/x.safetensors"] = valid_file([("c", "BF16", [4])])
        if nm != "escape_long":
            frag = "weight_map tensor 'c': shard name '%s' %s" % (quoted(shard), frag)
        folder(nm, wm(c=shard), two_shards(), "TC_EBADINDEX", frag, "1.2.1",
               "weight_map value %r" % (shard if len(shard) < 40 else shard[:20] + "..."),
               extra)
    idxraw = json.dumps(wm(), indent=2).replace('"c": "%s"' % S2, '"c": "a\\u0000.safetensors"')
    folder("escape_nul", idxraw.encode(), two_shards(), "TC_EBADINDEX",
           "\\u0000 is not allowed", "1.2.1",
           "embedded \\u0000 in a shard name (jansson refuses it; the basename check would too)")
    # 1.2.2 not a regular file (FIFO, socket, device: test_format.c)
    folder("shard_is_folder", {"weight_map": {"a": "model-00001-of-00001.safetensors"}},
           {"model-00001-of-00001.safetensors": None}, "TC_EBADFILE",
           "model-00001-of-00001.safetensors' is a folder, not a regular file", "1.2.2",
           "the shard is a directory")
    # 1.2.3 weight_map shape
    folder("no_weight_map", {"metadata": {}}, two_shards(), "TC_EBADINDEX",
           "index has no weight_map", "1.2.3", "weight_map missing")
    folder("weight_map_array", {"weight_map": [S1]}, two_shards(), "TC_EBADINDEX",
           "weight_map is not an object", "1.2.3", "weight_map is an array")
    folder("weight_map_empty", {"weight_map": {}}, two_shards(), "TC_EBADINDEX",
           "weight_map is empty", "1.2.3", "weight_map is {}")
    folder("weight_map_number", wm(c=5), two_shards(), "TC_EBADINDEX",
           "weight_map tensor 'c': shard is not a string", "1.2.3", "a non-string value")
    folder("index_not_object", b"[]", two_shards(), "TC_EBADINDEX",
           "index is not a JSON object", "1.2.3", "index is an array")
    folder("index_invalid_json", b'{"weight_map": {', two_shards(), "TC_EBADINDEX",
           "model.safetensors.index.json: invalid JSON", "1.2.3", "truncated JSON")
    # 1.2.4 index vs shards
    sh = two_shards()
    sh[S1] = valid_file([("a", "F32", [2])], {"format": "pt"})
    folder("tensor_missing_from_shard", wm(), sh, "TC_EBADINDEX",
           "tensor 'b' is listed for '%s' but missing from it" % S1, "1.2.4",
           "the index lists b, the shard lacks it")
    sh = two_shards()
    sh[S2] = valid_file([("c", "BF16", [4]), ("d", "U8", [1])], {"format": "pt"})
    folder("tensor_not_in_index", wm(), sh, "TC_EBADINDEX",
           "%s: tensor 'd' is not in the index" % S2, "1.2.4", "a shard tensor the index lacks")
    sh = two_shards()
    sh[S2] = valid_file([("a", "F32", [2]), ("c", "BF16", [4])], {"format": "pt"})
    folder("tensor_in_two_shards", wm(), sh, "TC_EBADINDEX",
           "%s: tensor 'a' is listed in the index under '%s'" % (S2, S1), "1.2.4",
           "the same tensor in both shards")
    sh = {S1: two_shards()[S1], "model-00002-of-00003.safetensors": two_shards()[S2]}
    folder("k_of_n_mismatch", wm(c="model-00002-of-00003.safetensors"), sh, "TC_EBADINDEX",
           "says 3 shards but", "1.2.4", "shard names disagree on n")
    folder("k_of_n_count", {"weight_map": {"a": S1, "b": S1}},
           {S1: two_shards()[S1]}, "TC_EBADINDEX",
           "weight_map names 1 shards but shard names say 2", "1.2.4",
           "shards named of-2, index names one")
    folder("k_zero", {"weight_map": {"a": "model-00000-of-00001.safetensors", "b": "model-00000-of-00001.safetensors"}},
           {"model-00000-of-00001.safetensors": two_shards()[S1]}, "TC_EBADINDEX",
           "is numbered 0 of 1", "1.2.4", "shard 0 of 1")
    # 1.2.5 files
    sh = two_shards()
    del sh[S2]
    folder("missing_shard", wm(), sh, "ENOENT",
           "cannot open '", "1.2.5", "a listed shard does not exist")
    sh = two_shards()
    sh[S2] = b""
    folder("zero_byte_shard", wm(), sh, "TC_EBADFILE",
           "%s: file is 0 bytes, shorter than the 8-byte header length" % S2, "1.2.5",
           "a zero-byte shard")
    folder("extra_unlisted_ok", wm(), two_shards(), "OK", "2 files, 3 tensors", "1.2.5",
           "an unlisted, corrupt *.safetensors is ignored",
           {"model-00003-of-00002.safetensors": b"garbage"})
    sh = two_shards()
    sh[S1] = st_bytes(hdr({"a": t("F32", [2], 8, 4), "b": t("F32", [3], 0, 12)}), b"\0" * 20)
    folder("bad_shard_header", wm(), sh, "TC_EBADFILE",
           "%s: tensor 'a': data_offsets [8, 4]: end before begin" % S1, "1.2.5",
           "a listed shard with a bad header")
    # 1.2.6 total_size is advisory
    for nm, ts in (("total_size_negative_ok", -5), ("total_size_huge_ok", 10 ** 30),
                   ("total_size_wrong_ok", 1), ("total_size_string_ok", "big")):
        i = wm()
        i["metadata"]["total_size"] = ts
        folder(nm, i, two_shards(), "OK", "3 tensors, 28 bytes", "1.2.6",
               "metadata.total_size = %r: ignored" % ts)
    i = wm()
    del i["metadata"]
    folder("metadata_absent_ok", i, two_shards(), "OK", "3 tensors", "1.2.6", "no metadata")
    # 1.2.7 duplicates, nesting
    raw = json.dumps(wm(), indent=2).replace('"a": "%s",' % S1, '"a": "%s", "a": "%s",' % (S1, S1))
    folder("dup_weight_map_key", raw.encode(), two_shards(), "TC_EBADINDEX",
           "duplicate object key", "1.2.7", "a weight_map key twice")
    deep = b'{"metadata": {"x": ' + b"[" * 5000 + b"]" * 5000 + b'}, "weight_map": ' + \
        json.dumps(wm()["weight_map"]).encode() + b"}"
    folder("deep_metadata", deep, two_shards(), "TC_EBADINDEX", "maximum parsing depth",
           "1.2.7", "5000 nested arrays (jansson's cap is 2048)")
    deep = b'{"metadata": {"x": ' + b"[" * 100 + b"]" * 100 + b'}, "weight_map": ' + \
        json.dumps(wm()["weight_map"]).encode() + b"}"
    folder("nested_metadata_ok", deep, two_shards(), "OK", "3 tensors", "1.2.7",
           "100 nested arrays in metadata: ignored")
    # folders without an index
    folder("no_index_two_files", None, two_shards(), "TC_EBADINDEX",
           "2 safetensors files and no 'model.safetensors.index.json'", "2",
           "several *.safetensors and no index")
    folder("no_index_one_file_ok", None, {S1: two_shards()[S1]}, "OK", "1 file, 2 tensors", "2",
           "a single *.safetensors")
    folder("model_safetensors_preferred_ok", None,
           {"model.safetensors": two_shards()[S2], "other.safetensors": b"junk"},
           "OK", "1 file, 1 tensor", "2", "model.safetensors wins over other files")
    folder("nothing_to_read", None, {"README.txt": b"no weights here\n"}, "TC_ENOTFOUND",
           "no '*.safetensors' file", "2", "a folder with no safetensors file")


def main():
    for sub in ("st", "idx"):
        shutil.rmtree(os.path.join(HERE, sub), ignore_errors=True)
        os.makedirs(os.path.join(HERE, sub))
    st_cases()
    idx_cases()
    with open(os.path.join(HERE, "README.md"), "w") as f:
        f.write(README_HEAD)
        f.write("| path | expected | message contains | item | case |\n")
        f.write("|---|---|---|---|---|\n")
        for path, code, frag, item, desc in ROWS:
            assert "`" not in frag and "|" not in frag, frag
            f.write("| `%s` | %s | `%s` | %s | %s |\n" % (path, code, frag, item,
                                                        desc.replace("|", "/")))
        f.write(README_TAIL)
    print("%d cases" % len(ROWS))


README_HEAD = """# Hostile safetensors and index corpus

Hand-written vectors for `docs/hostile-inputs.md` §1.1 (safetensors files)
and §1.2 (Hugging Face index folders), one file or folder per case, named
for the case.  Generated by `gen.py` (edit it, not the files, and rerun).

Each row gives what `tcast verify PATH` (`tc_st_verify`) must return:
`expected` is `tc_err_name()` of the code (`OK` = accepted) and the message
must contain the fragment, which names the offending file, tensor, field or
value.  `tests/unit/test_format.c` checks every row; `tests/fuzz/corpus/`
seeds the fuzzers with these files.  Messages for files are prefixed with
the path given (`st/x.safetensors: ...`); for folders with the folder path.

"""

README_TAIL = """
## Cases built by test_format.c

These need a filesystem object git cannot hold, or a large input:

| item | case | expected |
|---|---|---|
| 1.1.4 | N exactly at the 100 MB cap (sparse file) / cap + 1 | accepted past the length check (then `TC_EBADFILE`: NUL byte) / `TC_ELIMIT` `exceeds the 100000000-byte cap` |
| 1.1.9 | 10^5 nested `[` in a shape | `TC_EBADFILE` `shape: expected an integer` (no recursion) |
| 1.1.16 | a 1 MB tensor name | `TC_ELIMIT` `longer than 1024` |
| 1.1.17 | 10^5 tensors (accepted, fast) / 262,145 tensors | OK / `TC_ELIMIT` `more than 262144 tensors` |
| 1.1.20 | rank 65,536 | `TC_ELIMIT` `more than 16 dimensions` |
| 1.1.26 | file changed after validation | data is read with pread into owned buffers, never mapped: no SIGBUS |
| 1.1.27 | FIFO (no hang), socket, `/dev/null`, a folder, a symlink loop, no permission | `TC_EBADFILE` `is a FIFO`, `-ENXIO`, `TC_EBADFILE` `character device`, `TC_ENOTFOUND`, `ELOOP`, `EACCES` (skipped as root) |
| 1.2.2 | a FIFO / socket / device shard; symlinked shards (HF cache snapshot) | `TC_EBADFILE` `is a FIFO, not a regular file` / OK |
| 1.2.8 | 10^5 shards in an index; more shards than RLIMIT_NOFILE allows | `TC_ELIMIT` `more than 65536 shards` / `TC_ELIMIT` `raise ulimit -n` |
"""

if __name__ == "__main__":
    main()
