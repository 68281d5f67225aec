"""A WebSocket client of AllSource's live streams, with the `websockets`
library (independent of the server's own WebSocket code), for
tests/it/live_ws.rs and tests/it/groups.rs. Prints JSON.

usage:
  ws_client.py collect URL N [SECONDS]
      reads until N events came (JSON pages, single events or Arrow
      messages); prints {"positions", "heartbeats", "pages", "columns"}
  ws_client.py close URL [SECONDS]
      reads until the server closes; prints {"code", "reason", "events"}
      ({"http_status": S} if the handshake itself was refused)
  ws_client.py stall URL SECONDS
      opens the stream and reads nothing for SECONDS; prints {"closed":
      null} or the close code and reason if the server closed it meanwhile
  ws_client.py consume URL IDLE_BEATS [ACK_EVERY]
      a consumer-group member: acknowledges each page's position (or every
      ACK_EVERY-th page) and prints one JSON line per message as it comes:
      {"events": [[position, entity_id], ...], "position": N}, {"acked": N,
      "committed": C}, {"assigned":
      ...}; stops after IDLE_BEATS heartbeats in a row or when the
      connection ends, and last prints {"end": code or null}
"""
import asyncio
import io
import json
import sys

import pyarrow.ipc
import websockets


def positions_of(message):
    """The events of one message: (positions, columns)."""
    if isinstance(message, bytes):
        table = pyarrow.ipc.open_stream(io.BytesIO(message)).read_all()
        return table.column("position").to_pylist(), table.column_names
    frame = json.loads(message)
    if "events" in frame:
        rows = frame["events"]
    elif "event" in frame:
        rows = [frame["event"]]
    else:
        return None, frame
    columns = sorted(rows[0].keys()) if rows else []
    return [r["position"] for r in rows], columns


async def collect(url, n, seconds):
    out = {"positions": [], "heartbeats": 0, "pages": 0, "columns": None}
    async with websockets.connect(url, max_size=None) as ws:
        async def run():
            while len(out["positions"]) < n:
                got, columns = positions_of(await ws.recv())
                if got is None:
                    if "heartbeat" in columns:
                        out["heartbeats"] += 1
                        continue
                    raise SystemExit(f"unexpected frame {columns}")
                out["pages"] += 1
                out["positions"].extend(got)
                out["columns"] = columns
        try:
            await asyncio.wait_for(run(), seconds)
        except websockets.ConnectionClosed as e:
            out["closed"] = {"code": e.rcvd.code if e.rcvd else None,
                             "reason": e.rcvd.reason if e.rcvd else None}
        except asyncio.TimeoutError:
            out["timed_out"] = True
    print(json.dumps(out))


async def close(url, seconds):
    events = 0
    try:
        async with websockets.connect(url, max_size=None) as ws:
            try:
                async def run():
                    nonlocal events
                    while True:
                        got, _ = positions_of(await ws.recv())
                        events += len(got or [])
                await asyncio.wait_for(run(), seconds)
            except websockets.ConnectionClosed as e:
                print(json.dumps({"code": e.rcvd.code if e.rcvd else None,
                                  "reason": e.rcvd.reason if e.rcvd else None,
                                  "events": events}))
                return
    except websockets.InvalidStatus as e:
        print(json.dumps({"http_status": e.response.status_code}))
        return
    print(json.dumps({"code": None, "reason": "still open", "events": events}))


async def stall(url, seconds):
    # A queue of one message: once it is full, the client stops reading
    # the socket, its buffers fill and the server's sends wait.
    async with websockets.connect(url, max_size=None, max_queue=1) as ws:
        await asyncio.sleep(seconds)
        closed = None
        if ws.close_code is not None:
            closed = {"code": ws.close_code, "reason": ws.close_reason}
        print(json.dumps({"closed": closed}))


async def consume(url, idle_beats, ack_every):
    end = None
    try:
        async with websockets.connect(url, max_size=None) as ws:
            beats, pages = 0, 0
            while beats < idle_beats:
                frame = json.loads(await ws.recv())
                if "heartbeat" in frame:
                    beats += 1
                    continue
                if "events" in frame:
                    beats = 0
                    pages += 1
                    ps = [[e["position"], e.get("entity_id")] for e in frame["events"]]
                    print(json.dumps({"events": ps, "position": frame["position"],
                                      "generation": frame["generation"]}), flush=True)
                    if pages % ack_every == 0:
                        await ws.send(json.dumps({"ack": frame["position"],
                                                  "generation": frame["generation"]}))
                    continue
                print(json.dumps(frame), flush=True)
    except websockets.ConnectionClosed as e:
        end = e.rcvd.code if e.rcvd else 1006
    except (OSError, websockets.InvalidStatus, websockets.InvalidHandshake) as e:
        end = f"{type(e).__name__}: {e}"
    print(json.dumps({"end": end}), flush=True)


def main():
    command, url = sys.argv[1], sys.argv[2]
    rest = sys.argv[3:]
    if command == "collect":
        asyncio.run(collect(url, int(rest[0]), float(rest[1]) if len(rest) > 1 else 60))
    elif command == "close":
        asyncio.run(close(url, float(rest[0]) if rest else 30))
    elif command == "stall":
        asyncio.run(stall(url, float(rest[0])))
    elif command == "consume":
        asyncio.run(consume(url, int(rest[0]), int(rest[1]) if len(rest) > 1 else 1))
    else:
        raise SystemExit(f"unknown command {command}")


main()
