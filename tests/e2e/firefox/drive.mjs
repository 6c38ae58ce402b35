// Drives Debian's firefox-esr (headless, fake camera and microphone) through the classroom page: a teacher
// publishes, a student watches, raises a hand, answers a poll, chats; the teacher ends the class.
// Input: one JSON argument {teacherUrl, studentUrl, seconds}. Output: one JSON line of what the pages showed.
// Runs inside the test's network namespace with the server (Firefox never uses loopback for ICE).
import puppeteer from "puppeteer-core";

const input = JSON.parse(process.argv[2]);
const out = { steps: [] };
const logs = [];
const step = (name, data = {}) => out.steps.push({ name, t: Date.now(), ...data });

const browser = await puppeteer.launch({
  browser: "firefox",
  executablePath: input.firefox || "/usr/bin/firefox-esr",
  headless: true,
  extraPrefsFirefox: {
    "media.navigator.streams.fake": true,
    "media.navigator.permission.disabled": true,
    "media.peerconnection.ice.obfuscate_host_addresses": false,
    "media.autoplay.default": 0,
    // The namespace's address is not loopback, so the page would not be a secure context (no getUserMedia);
    // in production the page is served over HTTPS.
    "dom.securecontext.allowlist": new URL(input.teacherUrl).hostname,
  },
});
const playing = (id) => `(() => { const v = document.getElementById('${id}');
  return v && v.videoWidth > 0 && v.currentTime > 0.5 ? [v.videoWidth, v.videoHeight] : false; })()`;
try {
  out.version = await browser.version();
  const teacher = await browser.newPage();
  teacher.on("console", (m) => logs.push(`teacher: ${m.text()}`));
  await teacher.goto(input.teacherUrl);
  await teacher.waitForFunction("window.classcastRoom && Object.keys(window.classcastRoom.published).length === 2",
    { timeout: 30000 });
  out.published = await teacher.evaluate("Object.values(window.classcastRoom.published)");
  out.cameraSettings = await teacher.evaluate("window.classcastRoom.localTracks.camera.getSettings()");
  step("teacher published");

  const student = await browser.newPage();
  student.on("console", (m) => logs.push(`student: ${m.text()}`));
  await student.goto(input.studentUrl);
  await student.waitForFunction("window.classcastRoom && window.classcastRoom.state === 'connected'", { timeout: 30000 });
  step("student connected");
  const first = await student.waitForFunction(playing("camera-video"), { timeout: 30000 });
  step("student sees the camera", { size: await first.jsonValue() });
  try {
    await student.waitForFunction("document.getElementById('camera-video').videoWidth === 1280", { timeout: 20000 });
    step("student sees the top layer");
  } catch (e) {
    step("student never got the top layer", { width: await student.evaluate("document.getElementById('camera-video').videoWidth") });
  }
  out.studentAudio = await student.evaluate(`(() => { const a = [...document.querySelectorAll('audio')];
    return a.map((x) => ({ paused: x.paused, tracks: x.srcObject ? x.srcObject.getAudioTracks().length : 0 })); })()`);

  // Raise hand: it reaches the teacher's queue.
  await student.click("#hand-toggle");
  await teacher.waitForSelector("#hand-queue li[data-uid='ada']", { timeout: 10000 });
  step("teacher sees the raised hand");

  // A poll, answered and confirmed.
  await teacher.type("#poll-question", "Is light a wave?");
  await teacher.type("#poll-options", "Yes\nNo");
  await teacher.click("#poll-create");
  const yes = await student.waitForSelector("xpath/.//button[normalize-space(.)='Yes']", { timeout: 10000 });
  await yes.click();
  await teacher.waitForFunction("(() => { const b = document.querySelector(\".poll .result[data-option='0'] b\"); return b && b.textContent === '1'; })()",
    { timeout: 10000 });
  step("teacher sees the poll answer");

  // Chat both ways.
  await student.type("#chat-input", "Hello from Firefox");
  await student.click("#chat-send");
  await teacher.waitForFunction("document.getElementById('chat-log').textContent.includes('Hello from Firefox')",
    { timeout: 10000 });
  step("chat reached the teacher");

  // Screen share from Firefox (a second fake camera stands in for the screen).
  await teacher.evaluate(`(async () => {
    const s = await navigator.mediaDevices.getUserMedia({video: {width: 1280, height: 720}});
    await window.classcastRoom.publish({screen: s.getVideoTracks()[0]});
  })()`);
  const screen = await student.waitForFunction(playing("screen-video"), { timeout: 30000 });
  step("student sees the screen share", { size: await screen.jsonValue() });
  await new Promise((r) => setTimeout(r, (input.seconds || 3) * 1000));
  out.studentCamera = await student.evaluate("[document.getElementById('camera-video').videoWidth, document.getElementById('camera-video').videoHeight]");
  out.quality = await student.evaluate("document.getElementById('quality') && document.getElementById('quality').textContent");

  await teacher.click("#end-class");
  await student.waitForSelector("#terminal[data-state='ended']", { timeout: 15000 });
  step("student sees the ended screen");
  out.ok = true;
} catch (err) {
  out.ok = false;
  out.error = String(err && err.stack || err);
  out.logs = logs.slice(-40);
  for (const page of await browser.pages()) {
    out.pages = out.pages || [];
    out.pages.push(await page.evaluate("({url: location.pathname, state: window.classcastRoom && window.classcastRoom.state, text: document.body.innerText.slice(0, 300)})").catch((e) => String(e)));
  }
} finally {
  await browser.close().catch(() => {});
}
process.stdout.write(JSON.stringify(out) + "\n");
