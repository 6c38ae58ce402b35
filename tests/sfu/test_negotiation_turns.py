"""Join work is spread over event-loop turns (issue 14): a wave of joins must not keep the shared port unread."""

from __future__ import annotations

import asyncio

from sfu.engine.bridge import process_bridge
from sfu.ice import IceConfig
from sfu.peer import Peer
from sfu.rtcserver import rtc_server_for


async def test_a_wave_of_offers_takes_one_loop_turn_each() -> None:
    """Twenty subscribers' offers made at once: each loop turn carries at most one of them (the loop polls its
    sockets between two), and the shared port is read at each step's edges."""
    engine = process_bridge().engine
    config = IceConfig(hosts=("127.0.0.1",), rtc_port=0)
    server = rtc_server_for(config, engine)
    assert server is not None
    peers = []
    for i in range(20):
        peer = Peer(name=f"p{i}", engine=engine, transport=engine.add_transport(), rtc=server, ice=config)
        peer.add_send_transceiver("video")
        peer.add_send_transceiver("audio")
        peers.append(peer)
    polls = 0
    original = server.poll

    def counting_poll() -> None:
        nonlocal polls
        polls += 1
        original()

    server.poll = counting_poll  # type: ignore[method-assign]
    turns = 0
    running = True

    async def ticker() -> None:
        nonlocal turns
        while running:
            turns += 1
            await asyncio.sleep(0)

    done_at: list[int] = []

    async def offer(peer: Peer) -> None:
        offer = await peer.create_offer()
        assert "a=ice-lite" in offer.sdp and f" {server.port} typ host" in offer.sdp
        done_at.append(turns)

    tick = asyncio.create_task(ticker())
    try:
        await asyncio.gather(*(offer(p) for p in peers))
    finally:
        running = False
        await tick
        for peer in peers:
            await peer.close()
            engine.remove_transport(peer._engine_transport)
        server.close()
    assert len(done_at) == 20
    assert len(set(done_at)) == 20, f"several offers finished in one loop turn: {done_at}"
    assert polls >= 2 * 20  # before and after each step
