/**
 * A small, dependency-free SVG line chart: panels side by side sharing a logarithmic x axis, one
 * polyline per series, a shared legend. Output depends only on the input (fixed layout, fixed number
 * formatting, no dates or random ids), so the same figures always give the same file.
 */

export interface ChartPoint {
  readonly x: number
  /** undefined: no figure at this x (the line is broken there). */
  readonly y: number | undefined
}

export interface ChartSeries {
  readonly label: string
  readonly color: string
  /** SVG stroke-dasharray, e.g. "6 4"; solid when omitted. */
  readonly dash?: string
  readonly points: readonly ChartPoint[]
}

export interface ChartPanel {
  readonly title: string
  readonly yLabel: string
  readonly series: readonly ChartSeries[]
  /** Horizontal guides, e.g. the server's max_connections. */
  readonly guides?: ReadonlyArray<{ readonly y: number; readonly label: string }>
}

export interface LegendEntry {
  readonly label: string
  readonly color: string
  readonly dash?: string
}

export interface LineChart {
  readonly title: string
  readonly subtitle?: string
  readonly xLabel: string
  /** Tick positions on the log axis; the axis spans the first to the last. */
  readonly xTicks: readonly number[]
  readonly panels: readonly ChartPanel[]
  /** Drawn in rows of `legendColumns` (default 3), in the order given. */
  readonly legend: readonly LegendEntry[]
  readonly legendColumns?: number
}

const PANEL_WIDTH = 440
const PANEL_HEIGHT = 260
const MARGIN = { left: 72, right: 24, top: 84, bottom: 56 }
const GAP = 36
const LEGEND_ROW = 20
const FONT = 'font-family="system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif"'

export function lineChartSvg(chart: LineChart): string {
  const panelCount = Math.max(1, chart.panels.length)
  const columns = chart.legendColumns ?? 3
  const legendRows = Math.ceil(chart.legend.length / columns)
  const width = MARGIN.left + panelCount * PANEL_WIDTH + (panelCount - 1) * (GAP + MARGIN.left) + MARGIN.right
  const height = MARGIN.top + PANEL_HEIGHT + MARGIN.bottom + legendRows * LEGEND_ROW + 16
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" ${FONT} font-size="12">`,
    `<rect width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="${MARGIN.left}" y="24" font-size="16" font-weight="600" fill="#111">${escape(chart.title)}</text>`,
  ]
  if (chart.subtitle !== undefined) out.push(`<text x="${MARGIN.left}" y="44" fill="#555">${escape(chart.subtitle)}</text>`)

  const xMin = Math.log10(Math.min(...chart.xTicks))
  const xMax = Math.log10(Math.max(...chart.xTicks))
  chart.panels.forEach((panel, index) => {
    const left = MARGIN.left + index * (PANEL_WIDTH + GAP + MARGIN.left)
    out.push(...panelSvg(panel, left, MARGIN.top, chart.xTicks, xMin, xMax, chart.xLabel))
  })

  const legendTop = MARGIN.top + PANEL_HEIGHT + MARGIN.bottom
  chart.legend.forEach((entry, index) => {
    const x = MARGIN.left + (index % columns) * 230
    const y = legendTop + Math.floor(index / columns) * LEGEND_ROW
    out.push(
      `<line x1="${x}" y1="${y}" x2="${x + 28}" y2="${y}" stroke="${entry.color}" stroke-width="2.5"${dashAttr(entry.dash)}/>`,
      `<text x="${x + 36}" y="${y + 4}" fill="#222">${escape(entry.label)}</text>`,
    )
  })
  out.push('</svg>')
  return `${out.join('\n')}\n`
}

function panelSvg(
  panel: ChartPanel,
  left: number,
  top: number,
  xTicks: readonly number[],
  xMin: number,
  xMax: number,
  xLabel: string,
): string[] {
  const values = panel.series.flatMap((s) => s.points.map((p) => p.y)).filter((y): y is number => y !== undefined && Number.isFinite(y))
  const guides = panel.guides ?? []
  const yTop = niceCeiling(Math.max(1, ...values, ...guides.map((g) => g.y)))
  const xAt = (x: number) => left + (xMax === xMin ? PANEL_WIDTH / 2 : ((Math.log10(x) - xMin) / (xMax - xMin)) * PANEL_WIDTH)
  const yAt = (y: number) => top + PANEL_HEIGHT - (y / yTop) * PANEL_HEIGHT
  const out: string[] = [
    `<text x="${left}" y="${top - 12}" font-size="13" font-weight="600" fill="#222">${escape(panel.title)}</text>`,
    `<rect x="${left}" y="${top}" width="${PANEL_WIDTH}" height="${PANEL_HEIGHT}" fill="none" stroke="#ccc"/>`,
  ]
  for (let i = 0; i <= 5; i++) {
    const value = (yTop / 5) * i
    const y = fixed(yAt(value))
    out.push(
      `<line x1="${left}" y1="${y}" x2="${left + PANEL_WIDTH}" y2="${y}" stroke="#eee"/>`,
      `<text x="${left - 8}" y="${fixed(yAt(value) + 4)}" text-anchor="end" fill="#555">${formatTick(value)}</text>`,
    )
  }
  for (const tick of xTicks) {
    const x = fixed(xAt(tick))
    out.push(
      `<line x1="${x}" y1="${top}" x2="${x}" y2="${top + PANEL_HEIGHT}" stroke="#eee"/>`,
      `<text x="${x}" y="${top + PANEL_HEIGHT + 18}" text-anchor="middle" fill="#555">${formatTick(tick)}</text>`,
    )
  }
  out.push(
    `<text x="${left + PANEL_WIDTH / 2}" y="${top + PANEL_HEIGHT + 40}" text-anchor="middle" fill="#333">${escape(xLabel)}</text>`,
    `<text transform="translate(${left - 56} ${top + PANEL_HEIGHT / 2}) rotate(-90)" text-anchor="middle" fill="#333">${escape(panel.yLabel)}</text>`,
  )
  for (const guide of guides) {
    const y = fixed(yAt(guide.y))
    out.push(
      `<line x1="${left}" y1="${y}" x2="${left + PANEL_WIDTH}" y2="${y}" stroke="#999" stroke-dasharray="2 3"/>`,
      `<text x="${left + PANEL_WIDTH - 4}" y="${fixed(yAt(guide.y) - 5)}" text-anchor="end" fill="#777">${escape(guide.label)}</text>`,
    )
  }
  for (const series of panel.series) {
    // Consecutive defined points form one polyline; a missing figure breaks the line.
    let run: string[] = []
    const flush = () => {
      if (run.length > 1) {
        out.push(`<polyline points="${run.join(' ')}" fill="none" stroke="${series.color}" stroke-width="2"${dashAttr(series.dash)}/>`)
      }
      run = []
    }
    for (const point of series.points) {
      if (point.y === undefined || !Number.isFinite(point.y)) {
        flush()
        continue
      }
      const x = fixed(xAt(point.x))
      const y = fixed(yAt(point.y))
      run.push(`${x},${y}`)
      out.push(`<circle cx="${x}" cy="${y}" r="3" fill="${series.color}"><title>${escape(`${series.label}: ${formatTick(point.y)} at ${formatTick(point.x)}`)}</title></circle>`)
    }
    flush()
  }
  return out
}

function dashAttr(dash: string | undefined): string {
  return dash === undefined ? '' : ` stroke-dasharray="${dash}"`
}

/** 1, 2, 2.5, 5 × 10^k at or above `value`: round axis maxima. */
function niceCeiling(value: number): number {
  const power = Math.pow(10, Math.floor(Math.log10(value)))
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (step * power >= value) return step * power
  }
  return 10 * power
}

function fixed(value: number): string {
  return (Math.round(value * 10) / 10).toFixed(1)
}

/** Thousands separators by hand (not toLocaleString): the file must not depend on the ICU build. */
function formatTick(value: number): string {
  if (value >= 1000 && value % 1000 === 0 && value < 1_000_000) return `${value / 1000}k`
  const rounded = value >= 100 ? Math.round(value) : Math.round(value * 10) / 10
  const [whole, fraction] = String(rounded).split('.')
  const grouped = (whole ?? '').replace(/\B(?=(\d{3})+(?!\d))/g, ',')
  return fraction === undefined ? grouped : `${grouped}.${fraction}`
}

function escape(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;')
}
