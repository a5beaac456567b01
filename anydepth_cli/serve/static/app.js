// The anydepth web page: a photo in, its depth beside it (before/after slider, value under the cursor), downloads,
// and its point cloud in 3D; plus, with --gallery, the results of an earlier predict run. Everything comes from
// this server.
import * as THREE from "three";
import { OrbitControls } from "/static/vendor/three/OrbitControls.js";
import { PLYLoader } from "/static/vendor/three/PLYLoader.js";

const $ = (id) => document.getElementById(id);
const state = { token: sessionStorage.getItem("anydepth-token") || "", photo: null, map: null, files: {} };

function headers() {
  return state.token ? { Authorization: `Bearer ${state.token}` } : {};
}

async function call(path, options = {}) {
  const answer = await fetch(path, { ...options, headers: { ...headers(), ...(options.headers || {}) } });
  if (answer.status === 401) {
    $("token-box").hidden = false;
    throw new Error("this server needs a token");
  }
  if (!answer.ok) {
    let message = answer.statusText;
    try { message = (await answer.json()).error; } catch (_) { /* not JSON */ }
    throw new Error(`${answer.status}: ${message}`);
  }
  return answer;
}

function status(text) {
  $("status").textContent = text;
}

// --- numpy .npy (float32, C order) -----------------------------------------------------------------------------

function parseNpy(buffer) {
  const bytes = new Uint8Array(buffer);
  const major = bytes[6];
  const view = new DataView(buffer);
  const headerLength = major === 1 ? view.getUint16(8, true) : view.getUint32(8, true);
  const start = (major === 1 ? 10 : 12) + headerLength;
  const header = new TextDecoder().decode(bytes.subarray(major === 1 ? 10 : 12, start));
  const shape = header.match(/'shape':\s*\((\d+),\s*(\d+)\)/);
  if (!header.includes("<f4") || !shape) throw new Error("unexpected npy layout");
  return { height: Number(shape[1]), width: Number(shape[2]), values: new Float32Array(buffer.slice(start)) };
}

// --- the before/after view and the value under the cursor ------------------------------------------------------

function setSlider(percent) {
  $("depth").style.clipPath = `inset(0 0 0 ${percent}%)`;
  $("divider").style.left = `${percent}%`;
}

function showValue(event) {
  const map = state.map;
  if (!map) return;
  const box = $("compare").getBoundingClientRect();
  const x = Math.min(map.width - 1, Math.max(0, Math.floor(((event.clientX - box.left) / box.width) * map.width)));
  const y = Math.min(map.height - 1, Math.max(0, Math.floor(((event.clientY - box.top) / box.height) * map.height)));
  const value = map.values[y * map.width + x];
  $("readout").textContent = `${map.kind} ${value.toPrecision(5)} at (${x}, ${y})`;
}

// --- the 3D view ----------------------------------------------------------------------------------------------

const view = { renderer: null, scene: null, camera: null, controls: null, points: null };

function startView() {
  const element = $("view");
  view.renderer = new THREE.WebGLRenderer({ antialias: true, preserveDrawingBuffer: true });
  view.renderer.setPixelRatio(window.devicePixelRatio);
  element.appendChild(view.renderer.domElement);
  view.scene = new THREE.Scene();
  view.camera = new THREE.PerspectiveCamera(60, 4 / 3, 0.01, 1000);
  view.controls = new OrbitControls(view.camera, view.renderer.domElement);
  view.controls.enableDamping = true;
  new ResizeObserver(resizeView).observe(element);
  resizeView();
  view.renderer.setAnimationLoop(() => {
    view.controls.update();
    view.renderer.render(view.scene, view.camera);
  });
}

function resizeView() {
  const { clientWidth: width, clientHeight: height } = $("view");
  if (!width || !height) return;
  view.renderer.setSize(width, height, false);
  view.camera.aspect = width / height;
  view.camera.updateProjectionMatrix();
}

function showCloud(buffer) {
  if (!view.renderer) startView();
  const geometry = new PLYLoader().parse(buffer);
  geometry.scale(1, -1, -1); // the camera frame (x right, y down, z forward) as three.js sees it (y up, -z ahead)
  geometry.computeBoundingSphere();
  const material = new THREE.PointsMaterial({ size: 2, sizeAttenuation: false,
                                              vertexColors: geometry.hasAttribute("color") });
  if (view.points) {
    view.scene.remove(view.points);
    view.points.geometry.dispose();
    view.points.material.dispose();
  }
  view.points = new THREE.Points(geometry, material);
  view.scene.add(view.points);
  const { center, radius } = geometry.boundingSphere;
  view.camera.position.set(0, 0, 0);
  view.controls.target.copy(center);
  view.camera.near = Math.max(radius / 1000, 1e-4);
  view.camera.far = radius * 20 + center.length();
  view.camera.updateProjectionMatrix();
  view.controls.update();
  resizeView();
}

// --- a photo in -----------------------------------------------------------------------------------------------

async function takePhoto(file) {
  if (!file) return;
  state.photo = file;
  state.files = {};
  status(`Working on ${file.name}…`);
  $("result").hidden = false;
  $("photo").src = URL.createObjectURL(file);
  const post = (path) => call(path, { method: "POST", body: file, headers: { "Content-Type": "application/octet-stream" } });
  try {
    const [color, raw, cloud] = await Promise.all([
      post("/v1/depth?format=color"), post("/v1/depth?format=npy"), post("/v1/pointcloud")]);
    const [colorBlob, rawBlob, cloudBlob] = await Promise.all([color.blob(), raw.blob(), cloud.blob()]);
    state.files = { npy: rawBlob, ply: cloudBlob };
    state.map = { ...parseNpy(await rawBlob.arrayBuffer()), kind: raw.headers.get("X-Depth-Kind") };
    $("depth").src = URL.createObjectURL(colorBlob);
    showCloud(await cloudBlob.arrayBuffer());
    status(`${file.name}: ${state.map.kind} from ${raw.headers.get("X-Depth-Min")} to ${raw.headers.get("X-Depth-Max")}`);
  } catch (error) {
    status(`${file.name}: ${error.message}`);
  }
}

function stem(name) {
  return name.replace(/\.[^.]*$/, "");
}

async function download(kind) {
  let blob = state.files[kind];
  let name = state.gallery ? state.gallery[kind] : null;
  if (!blob && state.photo && kind === "png16") {
    const answer = await call("/v1/depth?format=png16", { method: "POST", body: state.photo });
    blob = state.files.png16 = await answer.blob();
  }
  if (!blob && name) blob = await (await call(`/gallery/${name.split("/").map(encodeURIComponent).join("/")}`)).blob();
  if (!blob) return;
  const suffix = { png16: "_depth16.png", npy: "_depth.npy", ply: ".ply" }[kind];
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = name ? name.split("/").pop() : stem(state.photo.name) + suffix;
  link.click();
}

// --- the gallery ----------------------------------------------------------------------------------------------

async function showGalleryEntry(entry) {
  const files = entry.files;
  const url = (path) => `/gallery/${path.split("/").map(encodeURIComponent).join("/")}`;
  const blobUrl = async (path) => URL.createObjectURL(await (await call(url(path))).blob());
  state.photo = null;
  state.files = {};
  state.gallery = { png16: files["raw:png16"], npy: files["raw:npy"], ply: files.cloud };
  $("result").hidden = false;
  $("depth").src = await blobUrl(files.color);
  $("photo").src = files.side ? await blobUrl(files.side) : $("depth").src;
  state.map = null;
  if (files["raw:npy"]) {
    const raw = await (await call(url(files["raw:npy"]))).arrayBuffer();
    state.map = { ...parseNpy(raw), kind: files["raw:npy"].endsWith("_disparity.npy") ? "disparity" : "depth" };
  }
  if (files.cloud) showCloud(await (await call(url(files.cloud))).arrayBuffer());
  status(entry.name);
}

async function loadGallery() {
  const { entries } = await (await call("/v1/gallery")).json();
  const list = $("entries");
  list.replaceChildren(...entries.map((entry) => {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = entry.name;
    button.addEventListener("click", () => showGalleryEntry(entry).catch((error) => status(error.message)));
    item.appendChild(button);
    return item;
  }));
  $("gallery").hidden = false;
}

// --- start ----------------------------------------------------------------------------------------------------

async function start() {
  try {
    const { models, gallery } = await (await call("/v1/models")).json();
    $("model").textContent = `${models[0].name}: ${models[0].output}`;
    if (gallery) await loadGallery();
  } catch (error) {
    status(error.message);
  }
}

$("file").addEventListener("change", (event) => takePhoto(event.target.files[0]));
const drop = $("drop");
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  takePhoto(event.dataTransfer.files[0]);
});
$("slider").addEventListener("input", (event) => setSlider(event.target.value));
$("compare").addEventListener("mousemove", showValue);
for (const button of document.querySelectorAll("[data-download]")) {
  button.addEventListener("click", () => download(button.dataset.download).catch((error) => status(error.message)));
}
$("token-save").addEventListener("click", () => {
  state.token = $("token").value;
  sessionStorage.setItem("anydepth-token", state.token);
  $("token-box").hidden = true;
  start();
});
setSlider(50);
start();
