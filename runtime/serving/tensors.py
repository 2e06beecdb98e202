"""Open Inference Protocol v2 tensors as rows of inputs and back. Pure: no Flask.

A v2 request's input tensor is `{"name", "shape", "datatype", "data"}`, its data flat in
row-major order (or nested); its rows along the first dimension are the inputs of predict,
one prediction each. Triton's binary tensor data extension is read too: the JSON header is the
body's first `Inference-Header-Content-Length` bytes, and each input with a
`binary_data_size` parameter takes its raw little-endian bytes, in order, from the rest
(BYTES elements each with a 4-byte length). Answers are JSON tensors.
"""
from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

#: Datatypes and their struct codes (little-endian in the binary extension); BYTES apart.
CODES = {"BOOL": "?", "UINT8": "B", "UINT16": "H", "UINT32": "I", "UINT64": "Q",
         "INT8": "b", "INT16": "h", "INT32": "i", "INT64": "q",
         "FP16": "e", "FP32": "f", "FP64": "d"}
DATATYPES = (*CODES, "BYTES")
INTEGERS = frozenset(k for k in CODES if "INT" in k)
FLOATS = frozenset(("FP16", "FP32", "FP64"))


def _range(kind: str) -> tuple[int, int]:
    bits = 8 * struct.calcsize(CODES[kind])
    return (0, 2 ** bits - 1) if kind.startswith("U") else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)


#: The values each integer datatype holds: (least, greatest).
RANGES = {kind: _range(kind) for kind in INTEGERS}
#: The most dimensions a tensor may have (nested lists this deep, at most).
MAX_DIMS = 32
#: The name of the one output tensor when predictions are not objects.
OUTPUT = "prediction"


class TensorError(ValueError):
    """Raised when a request's tensors are malformed or do not fit together; answered with 400."""


def split_binary(data: bytes, header_length: str | None) -> tuple[Any, bytes]:
    """(the JSON request, the binary tensor data after it) of a binary-extension body."""
    try:
        length = int(header_length or "")
    except ValueError:
        raise TensorError(f"Inference-Header-Content-Length: {header_length!r} is not a "
                          "number of bytes") from None
    if not 0 <= length <= len(data):
        raise TensorError(f"Inference-Header-Content-Length: {length} is not within the body "
                          f"({len(data)} bytes)")
    try:
        header = json.loads(data[:length])
    except ValueError as err:
        raise TensorError(f"malformed JSON header: {err}") from err
    return header, data[length:]


def request_tensors(body: Any, binary: bytes = b"") -> list[tuple[str, list[Any]]]:
    """(name, rows) of each input tensor of a v2 inference request, in order."""
    if not isinstance(body, Mapping):
        raise TensorError('body must be a JSON object with "inputs": a list of tensors')
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise TensorError('"inputs" must be a non-empty list of tensors '
                          '({"name", "shape", "datatype", "data"})')
    found: list[tuple[str, list[Any]]] = []
    offset = 0
    for index, tensor in enumerate(inputs):
        if not isinstance(tensor, Mapping):
            raise TensorError(f"inputs.{index}: must be an object")
        name = tensor.get("name")
        if not isinstance(name, str) or not name:
            raise TensorError(f"inputs.{index}.name: must be a non-empty string")
        if any(name == seen for seen, _ in found):
            raise TensorError(f"inputs.{index}.name: {name!r} is given twice")
        size = _binary_size(tensor, name)
        chunk = None
        if size is not None:
            if offset + size > len(binary):
                raise TensorError(f"input {name!r}: binary_data_size {size} goes past the "
                                  f"end of the body")
            chunk, offset = binary[offset:offset + size], offset + size
        found.append((name, tensor_rows(tensor, name, chunk)))
    return found


def _binary_size(tensor: Mapping[str, Any], name: str) -> int | None:
    parameters = tensor.get("parameters")
    if parameters is None:
        return None
    if not isinstance(parameters, Mapping):
        raise TensorError(f"input {name!r}: parameters must be an object")
    size = parameters.get("binary_data_size")
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise TensorError(f"input {name!r}: binary_data_size must be a number of bytes")
    return size


def tensor_rows(tensor: Mapping[str, Any], name: str, binary: bytes | None = None) -> list[Any]:
    """The tensor's data shaped by its `shape`: a list of its rows along the first dimension."""
    shape = tensor.get("shape")
    if (not isinstance(shape, list) or not shape
            or any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in shape)):
        raise TensorError(f"input {name!r}: shape must be a list of sizes (whole numbers, "
                          f"0 or more), the first the number of rows")
    if len(shape) > MAX_DIMS:
        raise TensorError(f"input {name!r}: at most {MAX_DIMS} dimensions, got {len(shape)}")
    kind = tensor.get("datatype")
    if kind not in DATATYPES:
        raise TensorError(f"input {name!r}: datatype {kind!r} is not one of "
                          f"{', '.join(DATATYPES)}")
    if binary is not None:
        flat = _from_binary(binary, kind, name)
    elif "data" not in tensor:
        raise TensorError(f"input {name!r}: has no data")
    else:
        flat = _checked(flatten(tensor["data"]), kind, name)
    count = math.prod(shape)
    if len(flat) != count:
        raise TensorError(f"input {name!r}: shape {shape} holds {count} values, "
                          f"data has {len(flat)}")
    return reshape(flat, shape)


def flatten(data: Any) -> list[Any]:
    """Nested lists as one flat list in row-major order (a scalar as a list of one)."""
    if not isinstance(data, list):
        return [data]
    flat: list[Any] = []
    stack: list[Iterable[Any]] = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                if len(stack) > MAX_DIMS:
                    raise TensorError(f"data is nested deeper than {MAX_DIMS} levels")
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def reshape(flat: Sequence[Any], shape: Sequence[int]) -> list[Any]:
    """FLAT (of prod(SHAPE) values) as nested lists of SHAPE."""
    items: list[Any] = list(flat)
    for size in reversed(shape[1:]):
        items = [items[at:at + size] for at in range(0, len(items), size)] if size else []
    if shape and shape[0] and not items:  # an inner dimension of 0: rows of empty lists
        items = [_empty(shape[1:]) for _ in range(shape[0])]
    return items


def _empty(shape: Sequence[int]) -> list[Any]:
    if not shape or shape[0] == 0:
        return []
    return [_empty(shape[1:]) for _ in range(shape[0])]


def _checked(values: list[Any], kind: str, name: str) -> list[Any]:
    for value in values:
        if kind == "BOOL":
            good = isinstance(value, bool)
        elif kind in INTEGERS:
            least, greatest = RANGES[kind]
            good = (isinstance(value, int) and not isinstance(value, bool)
                    and least <= value <= greatest)
        elif kind in FLOATS:
            good = isinstance(value, (int, float)) and not isinstance(value, bool)
        else:
            good = isinstance(value, str)
        if not good:
            raise TensorError(f"input {name!r}: {json.dumps(value)[:40]} is not a "
                              f"{kind} value")
    if kind in FLOATS:  # JSON's 1 in a float tensor is 1.0, as the binary form would give
        return [float(value) for value in values]
    return values


def _from_binary(data: bytes, kind: str, name: str) -> list[Any]:
    if kind == "BYTES":
        items: list[Any] = []
        at = 0
        while at < len(data):
            if at + 4 > len(data):
                raise TensorError(f"input {name!r}: BYTES element length cut short")
            (size,) = struct.unpack_from("<I", data, at)
            at += 4
            if at + size > len(data):
                raise TensorError(f"input {name!r}: BYTES element goes past its data")
            try:
                items.append(data[at:at + size].decode("utf-8"))
            except UnicodeDecodeError as err:
                raise TensorError(f"input {name!r}: a BYTES element is not UTF-8 text") from err
            at += size
        return items
    code = CODES[kind]
    width = struct.calcsize(code)
    if len(data) % width:
        raise TensorError(f"input {name!r}: {len(data)} bytes of binary data are not whole "
                          f"{kind} values ({width} bytes each)")
    return list(struct.unpack(f"<{len(data) // width}{code}", data))


def rows_of(tensors: list[tuple[str, list[Any]]], named: bool) -> list[Any]:
    """The inputs of predict, one per row: each row's object of tensors by name when NAMED
    (PredictInput's fields, or several tensors), else the one tensor's rows themselves."""
    if not named:
        if len(tensors) != 1:
            raise TensorError(f"expects one input tensor (its rows are the inputs), got "
                              f"{len(tensors)}: {', '.join(n for n, _ in tensors)}")
        return tensors[0][1]
    sizes = {name: len(rows) for name, rows in tensors}
    if len(set(sizes.values())) > 1:
        raise TensorError("input tensors must have the same number of rows (first dimension), "
                          f"got {', '.join(f'{n}: {s}' for n, s in sizes.items())}")
    count = next(iter(sizes.values()))
    return [{name: rows[index] for name, rows in tensors} for index in range(count)]


def plain(value: Any) -> Any:
    """VALUE with numpy arrays and scalars (anything with tolist()) as lists and numbers."""
    tolist = getattr(value, "tolist", None)
    if callable(tolist) and not isinstance(value, (str, bytes)):
        return tolist()
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, Mapping):
        return {key: plain(item) for key, item in value.items()}
    return value


def _dtype_hint(value: Any) -> str | None:
    """FP32, FP64, INT64 or BOOL from a numpy array's dtype; None for anything else."""
    dtype = getattr(value, "dtype", None)
    kind, size = getattr(dtype, "kind", None), getattr(dtype, "itemsize", None)
    if kind == "f":
        return "FP32" if size == 4 else "FP64"
    if kind in ("i", "u"):
        return "INT64"
    if kind == "b":
        return "BOOL"
    return None


def output_tensors(predictions: Any, names: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Predictions (one per row) as v2 output tensors: one per key when every prediction is an
    object (NAMES first, in order, then the rest), else one tensor named `prediction`."""
    hint = _dtype_hint(predictions)
    items = plain(predictions)
    if not isinstance(items, list):
        raise TypeError(f"predictions must be a list, one per row, got {type(items).__name__}")
    if items and all(isinstance(item, Mapping) for item in items):
        keys = [n for n in names if all(n in item for item in items)]
        for key in items[0]:
            if key not in keys and all(key in item for item in items):
                keys.append(key)
        if keys:
            return [tensor(str(key), [item[key] for item in items]) for key in keys]
    return [tensor(OUTPUT, items, hint)]


def tensor(name: str, items: list[Any], hint: str | None = None) -> dict[str, Any]:
    """`{"name", "datatype", "shape", "data"}` of a list of values, one per row."""
    shape = _shape(items)
    if shape is None:  # ragged, or objects: one JSON text per row
        return {"name": name, "datatype": "BYTES", "shape": [len(items)],
                "data": [_text(item) for item in items]}
    flat = flatten(items) if len(shape) > 1 else items
    kind = hint if hint and flat and _fits(flat, hint) else _datatype(flat)
    if kind == "BYTES":
        flat = [_text(item) for item in flat]
    return {"name": name, "datatype": kind, "shape": shape, "data": flat}


def _shape(items: Any) -> list[int] | None:
    """The shape of nested lists, None when ragged or holding objects."""
    if not isinstance(items, list):
        return None if isinstance(items, (Mapping, tuple)) else []
    inner = [_shape(item) for item in items]
    if any(s is None for s in inner) or any(s != inner[0] for s in inner[1:]):
        return None
    return [len(items), *(inner[0] or [])] if inner else [0]


def _fits(flat: list[Any], kind: str) -> bool:
    if kind == "BOOL":
        return all(isinstance(v, bool) for v in flat)
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in flat)


def _datatype(flat: list[Any]) -> str:
    if not flat:
        return "FP64"
    if all(isinstance(v, bool) for v in flat):
        return "BOOL"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in flat):
        return "INT64"
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in flat):
        return "FP64"
    return "BYTES"


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False,
                                                           default=str)
