// The two charts, drawn by the vendored uPlot (global `uPlot` from /static/vendor/uplot/uPlot.iife.min.js).
// Each chart is created on its first data and updated in place with setData; a ResizeObserver keeps it
// as wide as its card.

const HEIGHT = 230;
const COLORS = {
  line: '#2563eb',
  bars: 'rgba(100, 116, 139, 0.28)',
  barsStroke: 'rgba(100, 116, 139, 0.55)',
  neg: 'rgba(220, 38, 38, 0.75)',
  axis: '#64748b',
  grid: 'rgba(148, 163, 184, 0.25)',
  alert: 'rgba(220, 38, 38, 0.8)',
};
const FONT = '11px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif';

function axis(extra = {}) {
  return {
    stroke: COLORS.axis,
    font: FONT,
    grid: { stroke: COLORS.grid, width: 1 },
    ticks: { stroke: COLORS.grid, width: 1, size: 4 },
    ...extra,
  };
}

function widthOf(container) {
  return Math.max(240, Math.floor(container.clientWidth || container.getBoundingClientRect().width || 600));
}

/** Creates the chart on first use and keeps it sized to its container. */
class Chart {
  constructor(container, makeOpts) {
    this.container = container;
    this.makeOpts = makeOpts;
    this.plot = null;
    this.ro = new ResizeObserver(() => {
      if (!this.plot) return;
      const w = widthOf(this.container);
      if (w !== this.plot.width) this.plot.setSize({ width: w, height: HEIGHT });
    });
    this.ro.observe(container);
  }

  set(data, meta) {
    if (typeof uPlot === 'undefined') throw new Error('uPlot did not load');
    if (!this.plot) {
      const opts = this.makeOpts(meta);
      opts.width = widthOf(this.container);
      opts.height = HEIGHT;
      this.container.replaceChildren();
      this.plot = new uPlot(opts, data, this.container);
    } else {
      this.plot.setData(data);
    }
    this.container.dataset.rendered = 'true';
  }

  destroy() {
    this.ro.disconnect();
    if (this.plot) this.plot.destroy();
    this.plot = null;
    delete this.container.dataset.rendered;
  }
}

const utc = (ts) => uPlot.tzDate(new Date(ts * 1000), 'Etc/UTC');

/** Average sentiment per bucket (line, left axis) over interactions per bucket (bars, right axis). */
export function trendChart(container) {
  // Times (Unix seconds) of alerts, drawn as dashed lines over the chart.
  let marks = [];
  const drawMarks = (u) => {
    const { ctx } = u;
    const { top, height } = u.bbox;
    ctx.save();
    ctx.strokeStyle = COLORS.alert;
    ctx.lineWidth = 1.5 * (window.devicePixelRatio || 1);
    ctx.setLineDash([4, 3]);
    for (const t of marks) {
      const x = u.valToPos(t, 'x', true);
      if (!Number.isFinite(x) || x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
      ctx.beginPath();
      ctx.moveTo(x, top);
      ctx.lineTo(x, top + height);
      ctx.stroke();
    }
    ctx.restore();
  };
  const chart = new Chart(container, () => ({
    tzDate: utc,
    hooks: { draw: [drawMarks] },
    cursor: { points: { size: 6 } },
    legend: { live: true },
    scales: {
      // Half a bucket of room on each side, so the first and last bars are not cut in half.
      x: {
        time: true,
        range: (u, min, max) => {
          const xs = u.data[0];
          const step = xs && xs.length > 1 ? xs[1] - xs[0] : 86400;
          return [min - step / 2, max + step / 2];
        },
      },
      s: { range: (u, min, max) => [Math.max(-1, Math.min(min ?? 0, 0) - 0.1), Math.min(1, Math.max(max ?? 0, 0) + 0.1)] },
      n: { range: (u, min, max) => [0, Math.max(4, (max ?? 0) * 1.15)] },
    },
    series: [
      { label: 'Day (UTC)', value: '{YYYY}-{MM}-{DD}' },
      {
        label: 'Interactions',
        scale: 'n',
        fill: COLORS.bars,
        stroke: COLORS.barsStroke,
        width: 1,
        paths: uPlot.paths.bars({ size: [0.7, 48], align: 0 }),
        points: { show: false },
        value: (u, v) => (v == null ? '—' : String(v)),
      },
      {
        label: 'Avg sentiment',
        scale: 's',
        stroke: COLORS.line,
        width: 2,
        spanGaps: true,
        points: { show: true, size: 4, fill: COLORS.line },
        value: (u, v) => (v == null ? '—' : v.toFixed(3)),
      },
    ],
    axes: [
      axis({ grid: { show: false } }),
      axis({ scale: 's', size: 44, values: (u, vals) => vals.map((v) => v.toFixed(1)) }),
      axis({ scale: 'n', side: 1, size: 44, grid: { show: false } }),
    ],
  }));

  return {
    /** points: trends points [{bucket, interactions, averageSentiment}] */
    update(points) {
      const xs = [];
      const ns = [];
      const avg = [];
      for (const p of points || []) {
        const t = Date.parse(p.bucket);
        if (Number.isNaN(t)) continue;
        xs.push(t / 1000);
        ns.push(p.interactions ?? 0);
        avg.push(p.averageSentiment ?? null);
      }
      chart.set([xs, ns, avg]);
    },
    /** Marks the times (Unix seconds) at which alerts fired. */
    markers(times) {
      marks = (times || []).filter((t) => Number.isFinite(t));
      container.dataset.markers = String(marks.length);
      if (chart.plot) chart.plot.redraw(false);
    },
    destroy: () => chart.destroy(),
  };
}

/** Interactions per channel (bars) with the negative ones drawn over them (narrower, red). */
export function channelChart(container) {
  let names = [];
  let avgs = [];
  const chart = new Chart(container, () => ({
    legend: { live: true },
    cursor: { points: { show: false }, drag: { x: false, y: false } },
    scales: {
      x: { time: false, range: () => [-0.5, Math.max(names.length, 1) - 0.5] },
      y: { range: (u, min, max) => [0, Math.max(4, (max ?? 0) * 1.15)] },
    },
    series: [
      { label: 'Channel', value: (u, v) => (v == null ? '—' : `${names[v] ?? ''} (avg ${avgs[v] == null ? '—' : avgs[v].toFixed(2)})`) },
      {
        label: 'Interactions',
        fill: COLORS.bars,
        stroke: COLORS.barsStroke,
        width: 1,
        paths: uPlot.paths.bars({ size: [0.62, 90], align: 0 }),
        points: { show: false },
      },
      {
        label: 'Negative',
        fill: COLORS.neg,
        stroke: COLORS.neg,
        width: 0,
        paths: uPlot.paths.bars({ size: [0.3, 40], align: 0 }),
        points: { show: false },
      },
    ],
    axes: [
      axis({ grid: { show: false }, splits: () => names.map((_, i) => i), values: (u, splits) => splits.map((i) => names[i] ?? '') }),
      axis({ size: 44 }),
    ],
  }));

  return {
    /** byChannel: dashboard byChannel [{channel, interactions, negative, averageSentiment}] */
    update(byChannel) {
      const rows = byChannel || [];
      names = rows.map((r) => r.channel);
      avgs = rows.map((r) => r.averageSentiment ?? null);
      chart.set([rows.map((_, i) => i), rows.map((r) => r.interactions ?? 0), rows.map((r) => r.negative ?? 0)]);
      if (chart.plot) chart.plot.setScale('x', { min: -0.5, max: Math.max(names.length, 1) - 0.5 });
    },
    destroy: () => chart.destroy(),
  };
}
