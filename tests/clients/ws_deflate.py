"""A real third-party WebSocket client (Python `websockets`, which offers permessage-deflate by default)
for tests/api/live.rs: connects to the node with the token as subprotocol, trusting the node's
certificate, prints the negotiated extensions and the `ready` frame as JSON lines, sends a compressed
resume from 0 and prints the replay, then prints the next live frame.

Usage: python3 ws_deflate.py URL TOKEN CAFILE
"""
import asyncio
import json
import ssl
import sys

from websockets.asyncio.client import connect


async def main(url: str, token: str, cafile: str) -> None:
    context = ssl.create_default_context(cafile=cafile)
    async with connect(url, ssl=context, subprotocols=["bearer", token], open_timeout=10) as ws:
        extensions = ws.response.headers.get("Sec-WebSocket-Extensions", "")
        print(json.dumps({"extensions": extensions, "subprotocol": ws.subprotocol}), flush=True)
        ready = json.loads(await asyncio.wait_for(ws.recv(), 10))
        print(json.dumps(ready), flush=True)
        # Sent compressed (a client with the extension compresses its messages too): the answer, the
        # replay of every buffered event, shows the server inflated and understood it.
        await ws.send(json.dumps({"type": "resume", "lastSeq": 0, "padding": "x" * 200}))
        replay = json.loads(await asyncio.wait_for(ws.recv(), 10))
        print(json.dumps(replay), flush=True)
        live = json.loads(await asyncio.wait_for(ws.recv(), 10))
        print(json.dumps(live), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
