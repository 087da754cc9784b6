"""Write tests/fixtures/bf16.safetensors: PyTorch's bfloat16 rounding and
bf16 matrix products, for src/backend/cpu/bf16.rs's tests.

Run from the repository root:

    python3 tools/make_bf16_fixtures.py

Tensors (deterministic, byte-identical across runs):
- convert_in  f32 (N):   values chosen to hit every rounding case (ties to even
                         up and down, just below and above a tie, subnormals,
                         the largest floats that round to infinity, infinities,
                         zeros of both signs, NaN) and random values of every
                         magnitude;
- convert_out bf16 (N):  convert_in.to(torch.bfloat16);
- a f32 (9, 37), b f32 (37, 21): random operands (odd k, n not a multiple of 16);
- exact f32 (9, 21):     a.bf16() @ b.bf16() computed in float64, then rounded
                         to f32 (the products of the rounded operands, summed exactly);
- torch_bf16 bf16 (9, 21): torch.matmul(a.bf16(), b.bf16()) (PyTorch's own
                         bf16 product: f32 sums, the result rounded to bf16).
"""

import os
import struct

import torch
from safetensors.torch import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def f32(bits):
    return struct.unpack("<f", struct.pack("<I", bits))[0]


def special_values():
    bits = [
        0x3F808000,  # tie, even below: rounds down to 0x3F80
        0x3F818000,  # tie, odd below: rounds up to 0x3F82
        0x3F807FFF, 0x3F808001,  # just below / above a tie
        0xBF808000, 0xBF818000,  # the same, negative
        0x7F7FFFFF,  # largest float: rounds to infinity
        0x7F7F7FFF,  # rounds down to the largest bf16
        0x7F7F8000,  # tie at the top, odd below: rounds up to infinity
        0x00000001, 0x00008000, 0x00018000, 0x007FFFFF,  # subnormals
        0x00800000, 0x80800000,  # smallest normals
        0x7F800000, 0xFF800000,  # infinities
        0x00000000, 0x80000000,  # zeros
        0x7FC00000, 0xFFC00001, 0x7F800001,  # NaNs: quiet, negative with payload, signalling
    ]
    return [f32(b) for b in bits]


def main():
    g = torch.Generator().manual_seed(29)
    specials = torch.tensor(special_values(), dtype=torch.float32)
    normal = torch.randn(200, generator=g)
    scaled = torch.randn(200, generator=g) * torch.exp2(torch.randint(-140, 127, (200,), generator=g).float())
    # Random normal floats whose low half is exactly 0x8000: ties, half of
    # them between two even bf16 numbers (round down), half not (round up).
    high = torch.randint(0x0080, 0x7F80, (100,), generator=g) | (torch.randint(0, 2, (100,), generator=g) << 15)
    bits = (high << 16) | 0x8000
    ties = torch.where(bits >= 2**31, bits - 2**32, bits).to(torch.int32).view(torch.float32)
    convert_in = torch.cat([specials, normal, scaled.float(), ties])

    a = torch.randn(9, 37, generator=g)
    b = torch.randn(37, 21, generator=g)
    a16, b16 = a.to(torch.bfloat16), b.to(torch.bfloat16)
    tensors = {
        "convert_in": convert_in.contiguous(),
        "convert_out": convert_in.to(torch.bfloat16).contiguous(),
        "a": a,
        "b": b,
        "exact": (a16.double() @ b16.double()).float(),
        "torch_bf16": torch.matmul(a16, b16),
    }
    path = os.path.join(ROOT, "tests", "fixtures", "bf16.safetensors")
    save_file(tensors, path)
    print(f"{path}: {', '.join(f'{k} {tuple(v.shape)} {v.dtype}' for k, v in tensors.items())}")


if __name__ == "__main__":
    main()
