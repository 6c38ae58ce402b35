"""The teacher at home, run inside the "home" namespace by tests/net/test_namespaces.py.

It creates the class over REST, hands the test students' classroom links (one JSON line on stdout), then publishes
a synthetic camera and a tone with the aiortc client from behind the home NAT until its stdin closes. Its ICE is
pinned to its own address (sfu/client.py): the only way to the SFU is through the NAT's mapping.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import sys

import aiohttp
import av
import numpy as np

from sfu.client import Client, SyntheticVideoTrack, ToneAudioTrack
from sfu.ice import IceConfig


class NoisyVideoTrack(SyntheticVideoTrack):
    """The test picture with noise on it: the encoder spends its whole bitrate, as a real camera does (the plain
    picture compresses to a fraction of that, which makes a poor measurement of what a stream costs)."""

    async def recv(self) -> av.VideoFrame:
        frame = await super().recv()
        image = frame.to_ndarray(format="rgb24")
        image[::2, ::2] = np.random.default_rng().integers(0, 256, image[::2, ::2].shape, dtype=np.uint8)
        noisy = av.VideoFrame.from_ndarray(image, format="rgb24")
        noisy.pts, noisy.time_base = frame.pts, frame.time_base
        return noisy


async def main(base: str, org: str, address: str, size: tuple[int, int, int], students: int,
               noise: bool = False) -> None:
    headers = {"VF-ORG-ID": org}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.post(base + "/v1/room/create", json={
                "roomId": "net-class", "title": "Reachable from anywhere",
                "participant": {"uid": "teacher", "name": "Marie", "role": "TEACHER"}}) as resp:
            created = await resp.json()
            assert resp.status == 200, created
        links = []
        for n in range(students):
            async with http.post(base + "/v1/room/net-class/join", json={
                    "participant": {"uid": f"student-{n + 1}", "name": f"Student {n + 1}", "role": "STUDENT"},
                    "customization": {"showLobby": False}}) as resp:
                joined = await resp.json()
                assert resp.status == 200, joined
                links.append(joined["data"]["iframeUrl"])
    ice = IceConfig(hosts=(address,), allowed_networks=(ipaddress.ip_network("198.18.0.0/15"),))
    teacher = Client(base, created["data"]["token"], ice=ice, reconnect=False, name="teacher")
    await teacher.connect()
    camera = (NoisyVideoTrack if noise else SyntheticVideoTrack)(size[0], size[1], fps=size[2])
    await teacher.publish({"camera": camera, "microphone": ToneAudioTrack()})
    print(json.dumps({"iframeUrls": links,
                      "iceServers": teacher.joined["iceServers"]}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the test closes our stdin
    await teacher.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", required=True)
    parser.add_argument("--org", required=True)
    parser.add_argument("--address", required=True)
    parser.add_argument("--video", default="320x240x15", help="WIDTHxHEIGHTxFPS of the synthetic camera")
    parser.add_argument("--students", type=int, default=1, help="how many students' classroom links to print")
    parser.add_argument("--noise", action="store_true", help="a camera picture that does not compress")
    args = parser.parse_args()
    w, h, fps = (int(v) for v in args.video.split("x"))
    asyncio.run(main(args.base, args.org, args.address, (w, h, fps), args.students, args.noise))
