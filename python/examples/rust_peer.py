"""Python and Rust exchanging raw bytes: this process starts the Rust
example `python_peer` (examples/python_peer.rs) with shmport.spawn, posts
numpy arrays as raw bytes, and reads the Rust worker's replies in place.

    cargo build --release --example python_peer
    python python/examples/rust_peer.py [path to the python_peer binary]

The Rust side reads `msg.bytes()` as little-endian f64s where Python wrote
them and writes its reply (sum, min, max) straight into the ring with a
reservation; here `numpy.frombuffer(msg, numpy.float64)` reads it in place.
"""

import os
import sys

import numpy as np

import shmport

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT = os.path.join(HERE, "..", "..", "target", "release", "examples", "python_peer")


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else DEFAULT
    if not os.path.exists(binary):
        sys.exit(f"{binary} is missing: cargo build --release --example python_peer")
    proc, port = shmport.spawn([binary])
    rng = np.random.default_rng(1)
    for n in (1, 1000, 1 << 20):  # the last one (8 MiB) travels out of line
        arr = rng.standard_normal(n)
        port.post_bytes(arr)  # the array's bytes, copied once into shared memory
        with port.recv() as msg:
            total, lo, hi = np.frombuffer(msg.buffer, np.float64)  # in place
            assert np.isclose(total, arr.sum()) and lo == arr.min() and hi == arr.max()
            print(f"{n:>8} floats: sum {total:+.6f}, min {lo:+.6f}, max {hi:+.6f} (from Rust)")
    port.close()  # the Rust loop ends at the close event
    assert proc.wait() == 0


if __name__ == "__main__":
    main()
