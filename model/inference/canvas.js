// The explorer's drawing canvas (model/inference/explorer_ui.py), run by
// Gradio's gr.HTML as its js_on_load: `element` is the component, `props.value`
// its value, `trigger` fires its events, `watch` follows value changes sent
// by the server.  The value is the drawing as JSON: a list of strokes, each a
// list of [x, y] canvas points, what the pointer went through with the button
// down.  The server renders the model's input from these strokes exactly as
// the training images were made (data/simplify.py, data/raster.py).
const canvas = element.querySelector("canvas");
const ctx = canvas.getContext("2d");
let strokes = [];
let current = null;

function parse(text) {
  try {
    const value = JSON.parse(text || "[]");
    return Array.isArray(value) ? value : [];
  } catch (e) {
    return [];
  }
}

function redraw() {
  ctx.fillStyle = "white";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.strokeStyle = "black";
  ctx.lineWidth = 3;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  for (const stroke of strokes) {
    if (!Array.isArray(stroke) || !stroke.length) continue;
    ctx.beginPath();
    ctx.moveTo(stroke[0][0], stroke[0][1]);
    for (const [x, y] of stroke.slice(1)) ctx.lineTo(x, y);
    if (stroke.length === 1) ctx.lineTo(stroke[0][0] + 0.1, stroke[0][1]);
    ctx.stroke();
  }
}

function point(event) {
  const box = canvas.getBoundingClientRect();
  const x = (event.clientX - box.left) * canvas.width / box.width;
  const y = (event.clientY - box.top) * canvas.height / box.height;
  return [Math.round(x * 10) / 10, Math.round(y * 10) / 10];
}

function publish() {
  props.value = JSON.stringify(strokes);
  trigger("change");
}

canvas.addEventListener("pointerdown", (event) => {
  canvas.setPointerCapture(event.pointerId);
  current = [point(event)];
  strokes.push(current);
  redraw();
});
canvas.addEventListener("pointermove", (event) => {
  if (!current) return;
  current.push(point(event));
  redraw();
});
for (const name of ["pointerup", "pointercancel"]) {
  canvas.addEventListener(name, () => {
    if (!current) return;
    current = null;
    publish();
  });
}
element.querySelector(".undo").addEventListener("click", () => {
  strokes.pop();
  redraw();
  publish();
});
element.querySelector(".clear").addEventListener("click", () => {
  strokes = [];
  redraw();
  publish();
});
watch("value", () => {
  if (current) return;
  strokes = parse(props.value);
  redraw();
});
strokes = parse(props.value);
redraw();
