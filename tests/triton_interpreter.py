"""Make Triton's CPU interpreter fast enough for the scan tests (used when TRITON_INTERPRET=1).

The interpreter evaluates `tl.associative_scan` with a user combine function one element at a time (a Python
call per element: ~150 us each, minutes per test). Scans take an associative combine function by contract, so
a Hillis-Steele scan over whole arrays (log2(length) combine calls on shifted copies; the interpreter needs
power-of-two shapes, so the first `offset` lanes are combined with a dummy and then kept as they were) gives
the same values up to float rounding order. This replaces only that evaluation strategy of the interpreter; the kernels under
test are unchanged.
"""
from __future__ import annotations

import numpy as np


from triton.runtime import interpreter


def install() -> None:
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
