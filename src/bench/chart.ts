// The report's chart: decode s/token against context as an SVG, a line per series.

export interface SeriesPoint {
  context: number;
  sPerToken: number;
}

export interface ChartSeries {
  name: string;
  color: string;
  points: SeriesPoint[];
  dashed?: boolean;
}

/** s/token against context, log scale on y so disk and RAM fit together. */
export function chartSvg(series: readonly ChartSeries[], title: string): string {
  const w = 640;
  const h = 360;
  const pad = { l: 64, r: 180, t: 32, b: 44 };
  const xs = series.flatMap((s) => s.points.map((p) => p.context));
  const ys = series.flatMap((s) => s.points.map((p) => p.sPerToken)).filter((y) => y > 0);
  if (xs.length === 0 || ys.length === 0)
    return `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}"></svg>\n`;
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  const [ly0, ly1] = [Math.floor(Math.log10(Math.min(...ys))), Math.ceil(Math.log10(Math.max(...ys)))];
  const px = (x: number) => pad.l + (x1 === x0 ? 0.5 : (x - x0) / (x1 - x0)) * (w - pad.l - pad.r);
  const py = (y: number) => h - pad.b - ((Math.log10(y) - ly0) / Math.max(1, ly1 - ly0)) * (h - pad.t - pad.b);
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" font-family="sans-serif" font-size="12">`,
    `<rect width="${w}" height="${h}" fill="white"/>`,
    `<text x="${pad.l}" y="20" font-size="14">${title}</text>`,
  ];
  for (let e = ly0; e <= ly1; e++) {
    const y = py(10 ** e);
    out.push(
      `<line x1="${pad.l}" x2="${w - pad.r}" y1="${y}" y2="${y}" stroke="#ddd"/><text x="${pad.l - 8}" y="${y + 4}" text-anchor="end">${10 ** e} s</text>`,
    );
  }
  for (const x of [...new Set(xs)].sort((a, b) => a - b)) {
    out.push(
      `<text x="${px(x)}" y="${h - pad.b + 18}" text-anchor="middle">${x >= 1000 ? `${Math.round(x / 1000)}k` : x}</text>`,
    );
  }
  out.push(`<text x="${(pad.l + w - pad.r) / 2}" y="${h - 6}" text-anchor="middle">context (tokens)</text>`);
  series.forEach((s, i) => {
    const pts = s.points.filter((p) => p.sPerToken > 0).sort((a, b) => a.context - b.context);
    const d = pts.map((p) => `${px(p.context).toFixed(1)},${py(p.sPerToken).toFixed(1)}`).join(" ");
    out.push(
      `<polyline points="${d}" fill="none" stroke="${s.color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ""}/>`,
    );
    for (const p of pts)
      out.push(`<circle cx="${px(p.context).toFixed(1)}" cy="${py(p.sPerToken).toFixed(1)}" r="3" fill="${s.color}"/>`);
    out.push(
      `<line x1="${w - pad.r + 12}" x2="${w - pad.r + 36}" y1="${pad.t + 16 * i}" y2="${pad.t + 16 * i}" stroke="${s.color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ""}/><text x="${w - pad.r + 42}" y="${pad.t + 16 * i + 4}">${s.name}</text>`,
    );
  });
  out.push("</svg>");
  return out.join("\n") + "\n";
}
