"""Schemathesis hooks (SCHEMATHESIS_HOOKS=tests.schemathesis_hooks).

Random bytes never decode as an image, so on its own Schemathesis only ever reaches
/segment's 415. Here about half the generated /segment bodies carry a real smear instead (a
96x96 crop of a fixture image), so that the generated scale, rbc_diameter and include values
run through decoding, the work budget, the network and the encoders.
"""

from __future__ import annotations

import io
from pathlib import Path

import schemathesis
from hypothesis import strategies as st
from PIL import Image

FIXTURE = Path(__file__).parent / "data" / "blood-cell-detection" / "images" / "image-2.png"


def smear_crop() -> bytes:
    buffer = io.BytesIO()
    Image.open(FIXTURE).convert("RGB").crop((80, 80, 176, 176)).save(buffer, format="PNG")
    return buffer.getvalue()


SMEAR = smear_crop()


def with_smear(body):
    return {**body, "image": SMEAR} if isinstance(body, dict) else body


@schemathesis.hook
def before_generate_body(context, strategy):
    operation = context.operation
    if operation is None or operation.path != "/segment":
        return strategy
    return st.one_of(strategy, strategy.map(with_smear))
