"""A router for bench_e2e.py: sends a BMP stream, then holds the session open.

Usage: ``python3 bench/sender.py SOURCE PORT FILE``.  Connects to
127.0.0.1:PORT from the address SOURCE and says ``connected`` on standard
output; at the first line on standard input, sends FILE as fast as the
collector reads it, then keeps the connection until standard input closes, as
a router does: a BMP session that ends marks all its routes stale, which is
not part of loading a table (bench_e2e measures it separately).  Connecting
first and sending on a word lets twenty routers start at the same moment:
one that starts sending earlier fills the collector's queue on its own.
"""

import socket
import sys


def send(source: str, port: int, path: str) -> int:
    try:
        with socket.create_connection(("127.0.0.1", port), source_address=(source, 0)) as sock:
            print("connected", flush=True)
            sys.stdin.buffer.readline()  # go
            with open(path, "rb") as stream:
                while chunk := stream.read(1 << 20):
                    sock.sendall(chunk)
            sys.stdin.buffer.read()  # released
            sock.shutdown(socket.SHUT_WR)
            sock.recv(1)  # until the collector has read everything and closed
    except OSError as exc:
        print(f"{source}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(send(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
