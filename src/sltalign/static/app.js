// The page's whole logic: send audio (a chosen file or a MediaRecorder recording) to the server's
// OpenAI-compatible endpoint as verbose_json with subtitles, then show the text, the segments with their
// times, and SRT/VTT downloads made from the server's own renderings (the same bytes `sltalign translate` writes).
"use strict";

const $ = (id) => document.getElementById(id);
let recorder = null, chunks = [], recStart = 0, recTimer = null, downloadUrls = [];

function setStatus(msg, isError = false) {
  $("status").textContent = msg;
  $("status").className = isError ? "error" : "";
}

function clock(seconds) {
  const ms = Math.round(seconds * 1000);
  const h = Math.floor(ms / 3600000), m = Math.floor(ms / 60000) % 60, s = Math.floor(ms / 1000) % 60;
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return (h ? pad(h) + ":" : "") + pad(m) + ":" + pad(s) + "." + pad(ms % 1000, 3);
}

function busy(on) {
  $("translate").disabled = on;
  $("record").disabled = on || recorder !== null;
}

async function loadModelInfo() {
  try {
    const r = await fetch("/health");
    const h = await r.json();
    $("model").textContent = `model ${h.model}` + (h.language ? ` \u2192 ${h.language}` : "") +
      ` \u00b7 up to ${Math.round(h.max_upload_bytes / 1048576)} MB, ${h.max_seconds} s per request`;
  } catch (e) {
    $("model").textContent = "server not reachable";
  }
}

function showResult(res, name) {
  $("result").hidden = false;
  $("text").textContent = res.text || "(no speech found)";
  $("meta").textContent = `${name} \u00b7 ${res.duration.toFixed(1)} s of audio \u00b7 ${res.segments.length} segment(s)` +
    (res.decoding ? ` \u00b7 beam ${res.decoding.beam}` : "");
  const body = $("segments").querySelector("tbody");
  body.replaceChildren();
  for (const s of res.segments) {
    const tr = document.createElement("tr");
    for (const [cls, val] of [["time", clock(s.start)], ["time", clock(s.end)], ["", s.text], ["heard", s.source || ""]]) {
      const td = document.createElement("td");
      if (cls) td.className = cls;
      td.textContent = val;
      tr.appendChild(td);
    }
    body.appendChild(tr);
  }
  downloadUrls.forEach((u) => URL.revokeObjectURL(u));
  downloadUrls = [];
  const stem = name.replace(/\.[^.]+$/, "") || "translation";
  for (const [fmt, type] of [["srt", "application/x-subrip"], ["vtt", "text/vtt"]]) {
    const url = URL.createObjectURL(new Blob([res[fmt] || ""], { type }));
    downloadUrls.push(url);
    const a = $("download-" + fmt);
    a.href = url;
    a.download = `${stem}.${fmt}`;
  }
}

async function translate(blob, name) {
  const form = new FormData();
  form.append("file", blob, name);
  form.append("model", "sltalign");
  form.append("response_format", "verbose_json");
  form.append("subtitles", "true");
  busy(true);
  setStatus(`translating ${name}...`);
  const t0 = performance.now();
  try {
    const r = await fetch("/v1/audio/translations", { method: "POST", body: form });
    const body = await r.json().catch(() => null);
    if (!r.ok) {
      const msg = body && body.error ? body.error.message : `HTTP ${r.status}`;
      setStatus(`error: ${msg}`, true);
      return;
    }
    showResult(body, name);
    setStatus(`done in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  } catch (e) {
    setStatus(`error: ${e}`, true);
  } finally {
    busy(false);
  }
}

$("upload-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const f = $("file").files[0];
  if (!f) { setStatus("choose an audio file first", true); return; }
  translate(f, f.name);
});

$("record").addEventListener("click", async () => {
  if (!navigator.mediaDevices || !window.MediaRecorder) {
    setStatus("this browser cannot record here (recording needs https or localhost)", true);
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (e) {
    setStatus(`microphone not available: ${e.message || e}`, true);
    return;
  }
  chunks = [];
  const type = ["audio/webm;codecs=opus", "audio/ogg;codecs=opus", "audio/webm"].find((t) => MediaRecorder.isTypeSupported(t)) || "";
  recorder = new MediaRecorder(stream, type ? { mimeType: type } : undefined);
  recorder.ondataavailable = (e) => { if (e.data.size) chunks.push(e.data); };
  recorder.onstop = () => {
    stream.getTracks().forEach((t) => t.stop());
    clearInterval(recTimer);
    $("rec-time").textContent = "";
    const mime = recorder.mimeType || "audio/webm";
    recorder = null;
    $("stop").disabled = true;
    translate(new Blob(chunks, { type: mime }), mime.includes("ogg") ? "recording.ogg" : "recording.webm");
  };
  recorder.start();
  recStart = performance.now();
  recTimer = setInterval(() => { $("rec-time").textContent = `recording ${((performance.now() - recStart) / 1000).toFixed(0)} s`; }, 500);
  $("record").disabled = true;
  $("stop").disabled = false;
  setStatus("recording... press Stop to translate");
});

$("stop").addEventListener("click", () => { if (recorder) recorder.stop(); });

loadModelInfo();
