"""The Open Inference Protocol's (KServe V2) REST encoding: a JSON header, optionally followed
by binary tensor data (the binary tensor extension), in and out."""

from __future__ import annotations

import base64
import binascii
import json
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

HEADER_LENGTH = "Inference-Header-Content-Length"
DATATYPES = {"UINT8": np.uint8, "INT32": np.int32}


class ProtocolError(ValueError):
    """A request that does not follow the protocol (answered 400)."""


@dataclass
class OutputTensor:
    """One output: a name, a V2 datatype, and the values (an array, or a list of bytes)."""

    name: str
    datatype: str
    value: np.ndarray | list[bytes]
    parameters: dict[str, Any] | None = None

    @property
    def shape(self) -> list[int]:
        if self.datatype == "BYTES":
            return [len(self.value)]
        return list(self.value.shape)

    def binary(self) -> bytes:
        if self.datatype == "BYTES":
            return b"".join(struct.pack("<I", len(v)) + v for v in self.value)
        return np.ascontiguousarray(self.value, dtype=DATATYPES[self.datatype]).tobytes()

    def json_data(self) -> list:
        if self.datatype == "BYTES":
            return [v.decode("utf-8") for v in self.value]
        return self.value.reshape(-1).tolist()


def split_body(body: bytes, header_length: str | None) -> tuple[dict, bytes]:
    """The JSON request header and the binary data after it."""
    if header_length is None:
        json_part, binary = body, b""
    else:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise ProtocolError(f"{HEADER_LENGTH} {header_length[:20]!r} does not fit the body")
        json_part, binary = body[: int(header_length)], body[int(header_length) :]
    try:
        request = json.loads(json_part)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ProtocolError(f"the request header is not JSON: {error}") from error
    if not isinstance(request, dict):
        raise ProtocolError("the request header must be a JSON object")
    return request, binary


def bytes_input(request: dict, binary: bytes, name: str) -> bytes:
    """The single element of a BYTES input of shape [1]: from the binary data (length-prefixed
    as the extension has it) or from JSON `data` (a base64 string)."""
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not all(isinstance(i, dict) for i in inputs):
        raise ProtocolError("'inputs' must be a list of tensors")
    offset, found = 0, None
    for tensor in inputs:
        parameters = tensor.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise ProtocolError("input 'parameters' must be an object")
        size = parameters.get("binary_data_size")
        if size is not None and (not isinstance(size, int) or size < 0):
            raise ProtocolError("binary_data_size must be a non-negative integer")
        if tensor.get("name") == name:
            found = (tensor, offset, size)
        offset += size or 0
    if offset > len(binary):
        raise ProtocolError("binary_data_size adds up to more than the binary data sent")
    if found is None:
        raise ProtocolError(f"input '{name}' is missing")
    tensor, start, size = found
    if tensor.get("datatype") != "BYTES" or tensor.get("shape") != [1]:
        raise ProtocolError(f"input '{name}' must be BYTES of shape [1]")
    if size is not None:
        chunk = binary[start : start + size]
        if len(chunk) < 4 or struct.unpack_from("<I", chunk)[0] != len(chunk) - 4:
            raise ProtocolError(f"input '{name}': binary BYTES must be one length-prefixed element")
        return chunk[4:]
    data = tensor.get("data")
    if not isinstance(data, list) or len(data) != 1 or not isinstance(data[0], str):
        raise ProtocolError(f"input '{name}': 'data' must hold one base64 string")
    try:
        return base64.b64decode(data[0], validate=True)
    except (binascii.Error, ValueError) as error:
        raise ProtocolError(f"input '{name}': data is not base64") from error


def number_parameter(request: dict, name: str) -> float | None:
    """A numeric request parameter, or None."""
    parameters = request.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise ProtocolError("'parameters' must be an object")
    value = parameters.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolError(f"parameter '{name}' must be a number")
    return float(value)


def requested_outputs(request: dict, available: list[str]) -> dict[str, bool]:
    """Output name -> whether to send it as binary data."""
    parameters = request.get("parameters") or {}
    default_binary = bool(isinstance(parameters, dict) and parameters.get("binary_data_output"))
    outputs = request.get("outputs")
    if outputs is None:
        return dict.fromkeys(available, default_binary)
    if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
        raise ProtocolError("'outputs' must be a list of objects")
    wanted = {}
    for output in outputs:
        name = output.get("name")
        if name not in available:
            raise ProtocolError(f"unknown output {name!r}; the outputs are {available}")
        parameters = output.get("parameters") or {}
        binary = (
            parameters.get("binary_data", default_binary) if isinstance(parameters, dict) else False
        )
        wanted[name] = bool(binary)
    return wanted


def encode_response(
    header: dict, tensors: list[OutputTensor], binary: dict[str, bool]
) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary data follows it."""
    outputs, blobs = [], []
    for tensor in tensors:
        entry: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": tensor.shape,
        }
        parameters = dict(tensor.parameters or {})
        if binary[tensor.name]:
            blob = tensor.binary()
            parameters["binary_data_size"] = len(blob)
            blobs.append(blob)
        else:
            entry["data"] = tensor.json_data()
        if parameters:
            entry["parameters"] = parameters
        outputs.append(entry)
    head = json.dumps({**header, "outputs": outputs}).encode()
    if not blobs:
        return head, None
    return head + b"".join(blobs), len(head)
