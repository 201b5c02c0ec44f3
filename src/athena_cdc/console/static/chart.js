// A two-series line chart of events per second, drawn on a canvas.
const GAP_MS = 5000; // samples further apart than this: nobody was looking, draw a break

export function drawRates(canvas, points, spanMs = 300000) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || canvas.width;
  const height = canvas.clientHeight || canvas.height;
  if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
  if (canvas.height !== Math.round(height * ratio)) canvas.height = Math.round(height * ratio);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const style = getComputedStyle(document.documentElement);
  const color = (name) => style.getPropertyValue(name).trim();
  const left = 56, right = 10, top = 10, bottom = 22;
  const plotW = width - left - right, plotH = height - top - bottom;
  const now = Date.now();
  const x0 = now - spanMs;
  const max = niceMax(Math.max(1, ...points.map((p) => Math.max(p.in_per_s, p.out_per_s))));
  ctx.font = "11px system-ui, sans-serif";
  ctx.strokeStyle = color("--line");
  ctx.fillStyle = color("--muted");
  ctx.lineWidth = 1;
  for (let i = 0; i <= 4; i += 1) {
    const y = top + plotH - (plotH * i) / 4;
    ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(left + plotW, y); ctx.stroke();
    ctx.textAlign = "right";
    ctx.fillText(formatRate((max * i) / 4), left - 6, y + 4);
  }
  ctx.textAlign = "center";
  for (let m = 0; m <= spanMs / 60000; m += 1) {
    const x = left + plotW - (plotW * m * 60000) / spanMs;
    ctx.fillText(m === 0 ? "now" : `-${m}m`, x, height - 6);
  }
  const xOf = (t) => left + ((t - x0) / spanMs) * plotW;
  const yOf = (v) => top + plotH - (v / max) * plotH;
  for (const [key, name] of [["in_per_s", "--in"], ["out_per_s", "--out"]]) {
    ctx.strokeStyle = color(name);
    ctx.lineWidth = 1.6;
    ctx.beginPath();
    let previous = null;
    for (const p of points) {
      if (p.at_ms < x0) continue;
      const x = xOf(p.at_ms), y = yOf(p[key]);
      if (previous === null || p.at_ms - previous > GAP_MS) ctx.moveTo(x, y);
      else ctx.lineTo(x, y);
      previous = p.at_ms;
    }
    ctx.stroke();
  }
}

function niceMax(value) {
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) if (step * power >= value) return step * power;
  return 10 * power;
}

function formatRate(value) {
  if (value >= 1e6) return `${(value / 1e6).toFixed(1)}M`;
  if (value >= 1e3) return `${(value / 1e3).toFixed(1)}k`;
  return value % 1 ? value.toFixed(1) : String(value);
}
