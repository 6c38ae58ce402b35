// A typed use of the SDK: `npm run check-example` type-checks it against the generated declarations (tsc --noEmit).
import { EVENT, QUALITY, Room, SERVER_EVENT, STATE, getLocalMedia, type Joined, type TrackInfo } from "@classcast/sdk";

export async function teach(token: string, video: HTMLVideoElement): Promise<TrackInfo[]> {
  const room = new Room({ baseUrl: "https://classroom.example.org" });
  room.addEventListener(EVENT.STATECHANGE, (e) => {
    const state = (e as CustomEvent<{ state: string }>).detail.state;
    if (state === STATE.ENDED) video.srcObject = null;
  });
  room.addEventListener(SERVER_EVENT.CHAT, (e) => console.log((e as CustomEvent).detail.message));
  const joined: Joined = await room.connect(token);
  if (!joined.participant.permissions.includes("publish")) {
    room.setQuality(QUALITY.AUTO);
    return [];
  }
  const media = await getLocalMedia({ width: 640, height: 360 });
  video.srcObject = media;
  return room.publish({ camera: media.getVideoTracks()[0], microphone: media.getAudioTracks()[0] });
}
