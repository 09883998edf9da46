"""Hidden bits: sample bits outside the stored range (Bits Stored / High Bit).

A 12-bit MR image in 16-bit words has four bits per sample that no viewer shows. Old
systems store overlays there (a name drawn in bit 12, PS3.5 retired "overlays in pixel
data"), and anything can be hidden there. Every sample is put in its canonical form:

* unsigned data (Pixel Representation 0): every bit outside the stored range is zero;
* signed data (Pixel Representation 1): bits below the stored range are zero and bits above
  High Bit repeat the sign bit (two's complement sign extension). Zeroing them instead would
  make readers that do not mask (several do not) read -1000 as 3096; sign extension is a
  function of the stored value, so it hides nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class Layout:
    """How samples sit in their words (from the Image Pixel module)."""

    bits_allocated: int
    bits_stored: int
    high_bit: int
    signed: bool

    @property
    def low_bit(self) -> int:
        return self.high_bit - self.bits_stored + 1

    @property
    def plain(self) -> bool:
        """True when every allocated bit is stored (nothing can hide)."""
        return self.bits_stored >= self.bits_allocated or self.bits_allocated not in (8, 16, 32)

    @property
    def valid(self) -> bool:
        return (self.bits_allocated in (1, 8, 16, 32, 64) and 0 < self.bits_stored
                and self.bits_stored <= self.bits_allocated and self.low_bit >= 0
                and self.high_bit < self.bits_allocated)

    def unsigned_dtype(self) -> np.dtype[np.unsignedinteger]:
        return np.dtype(f"u{self.bits_allocated // 8}")

    def stored_mask(self) -> int:
        return ((1 << self.bits_stored) - 1) << self.low_bit


def canonical(words: npt.NDArray[np.unsignedinteger], layout: Layout
              ) -> npt.NDArray[np.unsignedinteger]:
    """``words`` (unsigned view of the samples) with every unused bit in canonical form."""
    if layout.plain:
        return words
    dtype = words.dtype
    mask = dtype.type(layout.stored_mask())
    out: npt.NDArray[np.unsignedinteger] = np.bitwise_and(words, mask)
    if layout.signed:
        full = (1 << layout.bits_allocated) - 1
        above = dtype.type(full ^ ((1 << (layout.high_bit + 1)) - 1))
        sign = dtype.type(1 << layout.high_bit)
        negative = np.bitwise_and(out, sign) != 0
        out = np.where(negative, np.bitwise_or(out, above), out).astype(dtype)
    return out


def hidden_bits(words: npt.NDArray[np.unsignedinteger], layout: Layout) -> int:
    """How many samples have a bit outside the stored range that is not canonical."""
    if layout.plain:
        return 0
    return int(np.count_nonzero(canonical(words, layout) != words))


def as_words(samples: npt.NDArray[np.generic], layout: Layout
             ) -> npt.NDArray[np.unsignedinteger]:
    """An unsigned view of decoded samples (same bytes), for the bit checks."""
    arr = np.ascontiguousarray(samples)
    want = layout.unsigned_dtype()
    if arr.dtype.itemsize != want.itemsize:
        arr = arr.astype(f"i{want.itemsize}" if layout.signed else want)
    return arr.view(want)
