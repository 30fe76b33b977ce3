"""Python and C exchanging raw bytes: a client of the C host in
examples/c_host/host.c (a poll() loop over the C API), doing what its Rust
client (ffi/examples/c_host_client.rs) does.

    cargo build --release -p shmport-ffi
    cc examples/c_host/host.c -Iinclude -Ltarget/release \\
       -Wl,-rpath,$PWD/target/release -lshmport -o target/c_host
    ./target/c_host /tmp/c_host.sock 1 &
    python python/examples/c_host_client.py /tmp/c_host.sock
"""

import sys

import shmport


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: c_host_client.py <socket path>")
    port = shmport.connect(sys.argv[1], timeout=10)

    def ask(label, request):
        port.post_bytes(request)
        with port.recv() as reply:  # the C host wrote it in place in the ring
            print(f"{label}: {bytes(reply).decode()}")

    ask("upper", b"upper hello from python")
    ask("sum", b"sum 1 2 3 40")

    # A request carrying a fresh port: the host streams on it, then closes
    # it; the close event ends the loop.
    mine, theirs = shmport.MessageChannel()
    port.post_bytes(b"stream 3", ports=[theirs])
    for item in mine:
        print(bytes(item).decode())
    print(f"stream ended: {mine.close_reason}")
    with port.recv() as reply:
        print(f"count: {bytes(reply).decode()}")
    ask("unknown", b"what?")
    port.close()


if __name__ == "__main__":
    main()
