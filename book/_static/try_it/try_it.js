/* The page book/try_it.md: hide patches of an image and watch the book's MAE fill them in.

The model is the reference run exported to ONNX (mae_minimal/export_onnx.py): it takes an image
and the indices of its visible patches, and returns the reconstruction, the reconstruction with the
visible patches pasted back, the squared error on the hidden patches and the model's loss.
onnxruntime-web runs it with WebAssembly, in this tab. Everything arrives as classic scripts that
fill window.TRY_IT_ASSETS when the page loads (book/_ext/try_it_assets.py writes them when the
book is built), because a page opened from disk may not fetch() files or import modules.

Mask convention, as in the package: hidden[i] = 1 when patch i is removed, 0 when visible;
patches are numbered row by row.
*/
(function () {
  "use strict";

  const assets = window.TRY_IT_ASSETS;
  const data = assets.data;
  const [ROWS, COLS] = data.gridSize;
  const PATCH = data.patchSize;
  const HEIGHT = ROWS * PATCH;
  const WIDTH = COLS * PATCH;
  const NUM_PATCHES = ROWS * COLS;
  const HIDDEN_COLOR = [70, 95, 150]; // a removed patch, where the encoder sees nothing
  const UNSCORED_COLOR = [215, 215, 215]; // a visible patch in the error map: the loss skips it
  const ERROR_COLORS = [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]];
  const HINT = "Click or drag over the second picture to hide and show patches.";

  const root = document.getElementById("try-it");
  const find = (selector) => root.querySelector(selector);
  const canvases = {
    image: find(".try-it-image"),
    masked: find(".try-it-masked"),
    reconstruction: find(".try-it-reconstruction"),
    pasted: find(".try-it-pasted"),
    error: find(".try-it-error"),
  };
  const controls = {
    masking: find("select[name=masking]"),
    hidden: find("input[name=hidden]"),
    hiddenOut: find(".try-it-hidden-count"),
    loss: find(".try-it-loss"),
    time: find(".try-it-time"),
    status: find(".try-it-status"),
  };

  const state = {
    mode: "pick", // "pick": a test image; "draw": the reader's drawing
    picked: 0, // which of data.images
    testImages: data.images.map((image) => base64Bytes(image.pixels)), // uint8 pixels, row by row
    drawing: new Uint8Array(HEIGHT * WIDTH),
    hidden: new Uint8Array(NUM_PATCHES),
    rerolls: 0, // how often "re-roll" was pressed: which of the drawn masks to show
  };
  let session = null;

  function base64Bytes(text) {
    return Uint8Array.from(atob(text), (char) => char.charCodeAt(0));
  }

  async function gunzipBase64(text) {
    const stream = new Blob([base64Bytes(text)]).stream().pipeThrough(new DecompressionStream("gzip"));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  }

  /* onnxruntime-web from classic scripts only: the WebAssembly binary given as bytes, its loader
     (an ES module) imported from a data: URL made of its text, and one thread (more threads need a
     cross-origin-isolated page, which a file:// page is not). */
  async function startModel() {
    ort.env.wasm.numThreads = 1;
    ort.env.wasm.wasmBinary = await gunzipBase64(assets.ortWasm);
    ort.env.wasm.wasmPaths = { mjs: "data:text/javascript," + encodeURIComponent(assets.ortGlue) };
    return ort.InferenceSession.create(await gunzipBase64(assets.model), { executionProviders: ["wasm"] });
  }

  function currentPixels() {
    return state.mode === "draw" ? state.drawing : state.testImages[state.picked];
  }

  /* One run of the model on the current image and mask, then every picture redrawn. Changes that
     arrive while it runs are gathered into one more run. */
  let running = false;
  let again = false;
  async function update() {
    if (!session) return;
    if (running) {
      again = true;
      return;
    }
    running = true;
    root.dataset.state = "busy";
    do {
      again = false;
      const start = performance.now();
      const pixels = currentPixels().slice(); // copies: the reader may change them meanwhile
      const hidden = state.hidden.slice();
      const normalised = Float32Array.from(pixels, (value) => (value / 255 - data.mean) / data.std);
      const kept = [];
      hidden.forEach((isHidden, index) => isHidden || kept.push(BigInt(index)));
      const outputs = await session.run({
        imgs: new ort.Tensor("float32", normalised, [1, 1, HEIGHT, WIDTH]),
        ids_keep: new ort.Tensor("int64", BigInt64Array.from(kept), [1, kept.length]),
      });
      drawGrey(canvases.image, pixels, (value) => value / 255);
      drawMasked(pixels, hidden);
      drawGrey(canvases.reconstruction, outputs.reconstruction.data, pixelValue);
      drawGrey(canvases.pasted, outputs.pasted.data, pixelValue);
      drawError(outputs.error.data, hidden);
      showNumbers(outputs.loss.data[0], hidden, performance.now() - start);
    } while (again);
    running = false;
    root.dataset.state = "ready"; // up to date: what the tests wait for
  }

  /* A normalised model value back to a pixel in [0, 1]. */
  function pixelValue(value) {
    return Math.min(1, Math.max(0, value * data.std + data.mean));
  }

  function isHiddenPixel(index, hidden) {
    const row = Math.floor(Math.floor(index / WIDTH) / PATCH);
    const col = Math.floor((index % WIDTH) / PATCH);
    return hidden[row * COLS + col] === 1;
  }

  /* Paint a canvas of HEIGHT x WIDTH pixels; color(i) gives pixel i's [r, g, b]. */
  function paint(canvas, color) {
    const context = canvas.getContext("2d");
    const picture = context.createImageData(WIDTH, HEIGHT);
    for (let i = 0; i < WIDTH * HEIGHT; i++) {
      picture.data.set([...color(i), 255], 4 * i);
    }
    context.putImageData(picture, 0, 0);
  }

  function drawGrey(canvas, values, toUnit) {
    paint(canvas, (i) => {
      const grey = Math.round(255 * toUnit(values[i]));
      return [grey, grey, grey];
    });
  }

  function drawMasked(pixels, hidden) {
    paint(canvases.masked, (i) => (isHiddenPixel(i, hidden) ? HIDDEN_COLOR : Array(3).fill(pixels[i])));
  }

  /* The error map shows |reconstruction - image| in pixel units (0 to 1) on the hidden patches. */
  function drawError(squaredErrors, hidden) {
    const distance = (i) => Math.min(1, Math.sqrt(squaredErrors[i]) * data.std); // in [0, 1]
    paint(canvases.error, (i) => (isHiddenPixel(i, hidden) ? errorColor(distance(i)) : UNSCORED_COLOR));
  }

  function errorColor(fraction) {
    const position = fraction * (ERROR_COLORS.length - 1);
    const low = Math.min(Math.floor(position), ERROR_COLORS.length - 2);
    const weight = position - low;
    const [from, to] = [ERROR_COLORS[low], ERROR_COLORS[low + 1]];
    return from.map((value, c) => Math.round(value + weight * (to[c] - value)));
  }

  /* The numbers under the pictures, and the same in the widget's data- attributes (for the tests). */
  function showNumbers(loss, hidden, milliseconds) {
    const numHidden = hidden.reduce((a, b) => a + b, 0);
    controls.loss.textContent = numHidden ? loss.toFixed(3) : "none hidden";
    const percent = Math.round((100 * numHidden) / NUM_PATCHES);
    controls.hiddenOut.textContent = `${numHidden} of ${NUM_PATCHES} (${percent}%)`;
    controls.time.textContent = `${milliseconds.toFixed(1)} ms`;
    setSliderFor(numHidden);
    root.dataset.mask = hidden.join("");
    root.dataset.image = state.mode === "draw" ? "drawing" : String(data.images[state.picked].index);
    root.dataset.loss = String(loss);
    root.dataset.updateMs = milliseconds.toFixed(2);
    root.dataset.updates = String(Number(root.dataset.updates || 0) + 1);
  }

  /* Masks: the package's own draws (data.masks), one per masking, number hidden and re-roll. */
  function allowedCounts() {
    return Object.keys(data.masks[controls.masking.value]).map(Number).sort((a, b) => a - b);
  }

  function useDrawnMask() {
    const counts = allowedCounts();
    const draws = data.masks[controls.masking.value][counts[Number(controls.hidden.value)]];
    const mask = draws[state.rerolls % draws.length];
    state.hidden = Uint8Array.from(mask, Number);
    update();
  }

  /* The slider picks an index into the allowed numbers of hidden patches (all of them for random
     and block masking, one per grid spacing for grid masking); it keeps the nearest count. */
  function setSliderFor(count) {
    const counts = allowedCounts();
    const gap = (i) => Math.abs(counts[i] - count);
    const nearest = counts.reduce((best, _, i) => (gap(i) < gap(best) ? i : best), 0);
    controls.hidden.max = String(counts.length - 1);
    controls.hidden.value = String(nearest);
  }

  /* Clicking or dragging over the masked picture: the first patch touched flips, and every patch
     the drag crosses takes the same state. The last visible patch stays: the encoder needs one. */
  function patchAt(canvas, event) {
    const box = canvas.getBoundingClientRect();
    const col = Math.floor(((event.clientX - box.left) / box.width) * COLS);
    const row = Math.floor(((event.clientY - box.top) / box.height) * ROWS);
    return row >= 0 && row < ROWS && col >= 0 && col < COLS ? row * COLS + col : null;
  }

  function setPatch(index, hidden) {
    if (index === null || state.hidden[index] === hidden) return;
    const visible = state.hidden.length - state.hidden.reduce((a, b) => a + b, 0);
    if (hidden && visible === 1) {
      controls.status.textContent = "One patch stays visible: the encoder needs something to look at.";
      return;
    }
    state.hidden[index] = hidden;
    controls.status.textContent = HINT;
    update();
  }

  let dragValue = null; // what a drag over the masked picture sets: 1 = hide, 0 = show
  canvases.masked.addEventListener("pointerdown", (event) => {
    const index = patchAt(canvases.masked, event);
    if (index === null) return;
    canvases.masked.setPointerCapture(event.pointerId);
    dragValue = 1 - state.hidden[index];
    setPatch(index, dragValue);
  });
  canvases.masked.addEventListener("pointermove", (event) => {
    if (dragValue !== null) setPatch(patchAt(canvases.masked, event), dragValue);
  });
  canvases.masked.addEventListener("pointerup", () => (dragValue = null));

  /* Drawing mode: a soft round brush on the image, white on black as in Fashion-MNIST. */
  let lastPoint = null;
  function brush(x, y) {
    const erase = find("input[name=try-it-brush]:checked").value === "erase";
    for (let row = Math.floor(y - 2); row <= y + 2; row++) {
      for (let col = Math.floor(x - 2); col <= x + 2; col++) {
        if (row < 0 || row >= HEIGHT || col < 0 || col >= WIDTH) continue;
        const distance = Math.hypot(col + 0.5 - x, row + 0.5 - y);
        const strength = Math.round(255 * Math.min(1, Math.max(0, 1.6 - distance)));
        const i = row * WIDTH + col;
        const old = state.drawing[i];
        state.drawing[i] = erase ? Math.min(old, 255 - strength) : Math.max(old, strength);
      }
    }
  }

  function stroke(event) {
    const box = canvases.image.getBoundingClientRect();
    const point = [
      ((event.clientX - box.left) / box.width) * WIDTH,
      ((event.clientY - box.top) / box.height) * HEIGHT,
    ]; // in image pixels
    const from = lastPoint || point;
    const steps = Math.max(1, Math.ceil(2 * Math.hypot(point[0] - from[0], point[1] - from[1])));
    for (let s = 1; s <= steps; s++) {
      brush(from[0] + ((point[0] - from[0]) * s) / steps, from[1] + ((point[1] - from[1]) * s) / steps);
    }
    lastPoint = point;
    update();
  }

  canvases.image.addEventListener("pointerdown", (event) => {
    if (state.mode !== "draw") return;
    canvases.image.setPointerCapture(event.pointerId);
    lastPoint = null;
    stroke(event);
  });
  canvases.image.addEventListener("pointermove", (event) => lastPoint && stroke(event));
  canvases.image.addEventListener("pointerup", () => (lastPoint = null));

  /* The gallery of test images and the other controls. */
  function buildGallery() {
    const gallery = find(".try-it-gallery");
    data.images.forEach((image, i) => {
      const button = document.createElement("button");
      button.type = "button";
      button.title = `test image ${image.index}: ${image.label}`;
      button.setAttribute("aria-label", button.title);
      const thumbnail = document.createElement("canvas");
      thumbnail.width = WIDTH;
      thumbnail.height = HEIGHT;
      drawGrey(thumbnail, state.testImages[i], (value) => value / 255);
      button.append(thumbnail);
      button.addEventListener("click", () => {
        state.picked = i;
        setMode("pick");
      });
      gallery.append(button);
    });
  }

  function setMode(mode) {
    state.mode = mode;
    find(`input[name=try-it-mode][value=${mode}]`).checked = true;
    find(".try-it-draw-tools").hidden = mode !== "draw";
    canvases.image.classList.toggle("try-it-drawable", mode === "draw");
    const picked = data.images[state.picked];
    find(".try-it-image-caption").textContent =
      mode === "draw" ? "Your drawing (draw here)" : `Test image ${picked.index}: ${picked.label}`;
    find(".try-it-gallery").querySelectorAll("button").forEach((button, i) => {
      button.setAttribute("aria-pressed", String(mode === "pick" && i === state.picked));
    });
    update();
  }

  root.querySelectorAll("input[name=try-it-mode]").forEach((radio) => {
    radio.addEventListener("change", () => setMode(radio.value));
  });
  controls.masking.addEventListener("change", () => {
    setSliderFor(state.hidden.reduce((a, b) => a + b, 0));
    useDrawnMask();
  });
  controls.hidden.addEventListener("input", useDrawnMask);
  find("[data-action=reroll]").addEventListener("click", () => {
    state.rerolls += 1;
    useDrawnMask();
  });
  find("[data-action=show-all]").addEventListener("click", () => {
    state.hidden.fill(0);
    update();
  });
  find("[data-action=clear]").addEventListener("click", () => {
    state.drawing.fill(0);
    update();
  });
  find("[data-action=copy]").addEventListener("click", () => {
    state.drawing.set(state.testImages[state.picked]);
    update();
  });

  async function main() {
    root.style.setProperty("--try-it-rows", ROWS);
    root.style.setProperty("--try-it-cols", COLS);
    Object.values(canvases).forEach((canvas) => Object.assign(canvas, { width: WIDTH, height: HEIGHT }));
    buildGallery();
    find(".try-it-test-mse").textContent =
      `(over all ${data.metrics.held_out_images.toLocaleString("en")} test images, ` +
      `at the masking the model was trained with: ${data.metrics.mse.toFixed(3)})`;
    controls.masking.value = data.training.masking; // start with a mask like those of training
    state.hidden = Uint8Array.from(data.masks[data.training.masking][data.training.hidden][0], Number);
    setSliderFor(data.training.hidden);
    session = await startModel();
    controls.status.textContent = HINT;
    setMode("pick");
  }

  main().catch((error) => {
    controls.status.textContent = `The model could not start: ${error.message}`;
    root.dataset.state = "failed";
    throw error;
  });
})();
