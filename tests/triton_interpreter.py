"""Make Triton's CPU interpreter fast enough for the scan tests (used when TRITON_INTERPRET=1).

The interpreter evaluates `tl.associative_scan` with a user combine function one element at a time (a Python
call per element: ~150 us each, minutes per test). Scans take an associative combine function by contract, so
a Hillis-Steele scan over whole arrays (log2(length) combine calls on shifted copies; the interpreter needs
power-of-two shapes, so the first `offset` lanes are combined with a dummy and then kept as they were) gives
the same values up to float rounding order. This replaces only that evaluation strategy of the interpreter; the kernels under
test are unchanged.

It also makes the interpreter round float32 -> bfloat16 casts to nearest even, as compiled kernels do (Triton's
default for downcasts, `cvt.rn.bf16.f32`): the interpreter truncates them (Triton 3.8), which doubles the
rounding error of every bfloat16 store the tests check (e.g. DyT's bfloat16 output).
"""
from __future__ import annotations

import numpy as np
import torch
import triton.language as tl
from triton.runtime import interpreter

_truncating_cast = interpreter.InterpreterBuilder.cast_impl


def _cast_rounding_to_bfloat16(self, src, dst_type):
    if src.dtype.scalar == tl.float32 and dst_type.scalar == tl.bfloat16:
        rounded = torch.from_numpy(src.data.copy()).to(torch.bfloat16).view(torch.int16)
        return interpreter.TensorHandle(rounded.numpy().view(np.uint16), dst_type.scalar)
    return _truncating_cast(self, src, dst_type)


def install() -> None:
    interpreter.InterpreterBuilder.cast_impl = _cast_rounding_to_bfloat16

    def generic_scan(self, input):
        datas = [np.moveaxis(arg.handle.data, self.axis, 0).copy() for arg in input]
        n = datas[0].shape[0]
        offset = 1
        while offset < n:
            acc = tuple(self.to_tensor(np.roll(d, offset, axis=0), input[k].dtype) for k, d in enumerate(datas))
            cur = tuple(self.to_tensor(d, input[k].dtype) for k, d in enumerate(datas))
            with np.errstate(all="ignore"):  # the dummy lanes may overflow; they are discarded
                ret = self.combine_fn.fn(*acc, *cur)
            ret = ret if isinstance(ret, tuple) else (ret,)
            for k, r in enumerate(ret):
                datas[k][offset:] = r.handle.data[offset:]
            offset *= 2
        return [self.to_tensor(np.moveaxis(d, 0, self.axis), input[k].dtype) for k, d in enumerate(datas)]

    interpreter.ScanOps.generic_scan = generic_scan
