"""A reply stream per request: each request carries a fresh port; the
responder streams its results on that port and closes it, and the close
event ends the requester's loop ("for item in replies").

    python reply_stream.py
"""

import os
import sys

import shmport


def responder():
    port = shmport.from_parent()
    for request in port:  # until the requester closes
        (replies,) = request.ports
        n = request.data["count"]
        with replies:  # closed at the end of the block: the stream ends
            for i in range(n):
                replies.post(f"{request.data['word']} #{i}")


def main():
    proc, port = shmport.spawn([sys.executable, os.path.abspath(__file__), "responder"])
    for word, count in [("alpha", 3), ("beta", 2), ("gamma", 0)]:
        mine, theirs = shmport.MessageChannel()
        port.post({"word": word, "count": count}, ports=[theirs])
        items = [m.data for m in mine]  # ends at the close event
        print(f"{word}: {items} (stream ended: {mine.close_reason})")
        assert len(items) == count and mine.close_reason == "closed"
    port.close()
    assert proc.wait() == 0


if __name__ == "__main__":
    responder() if sys.argv[1:] == ["responder"] else main()
