/**
 * Light SVG charts for the panels that redraw while sliders move (the preview's overlay histogram and
 * per-layer lines). A redraw is a few path strings and a dozen tick labels: no text measurement, no
 * chart-internal store, a handful of DOM nodes. Recharts drew the same charts in 40–110 ms of
 * main-thread work per slider move on this machine (tick measurement by getBoundingClientRect,
 * re-renders of its own store, thousands of short-lived nodes for the garbage collector to sweep).
 */
import { memo, useLayoutEffect, useMemo, useRef, useState, type MouseEvent, type ReactNode } from 'react';
import { binAt, linePath, linearScale, stepAreaPath, valueAxis } from './chart-geometry.ts';

/** One plotted series: its name in the legend and tooltip, its values and its colour (any CSS colour). */
export interface ChartSeries {
  name: string;
  values: ArrayLike<number>;
  color: string;
}

/** Width of the element, followed with a ResizeObserver (one measurement at mount, then only on resize). */
function useWidth(): [React.RefObject<HTMLDivElement | null>, number] {
  const ref = useRef<HTMLDivElement>(null);
  const [width, setWidth] = useState(0);
  useLayoutEffect(() => {
    const el = ref.current;
    if (!el) return;
    setWidth(el.clientWidth);
    const observer = new ResizeObserver((entries) => {
      const w = Math.floor(entries[0].contentRect.width);
      setWidth((old) => (old === w ? old : w));
    });
    observer.observe(el);
    return () => observer.disconnect();
  }, []);
  return [ref, width];
}

const FONT = 11;
const TICK = 5;
/** Room around each chart's plot for its tick labels, in px. */
const HISTOGRAM_MARGIN = { left: 60, right: 12, top: 8, bottom: 22 };
const LINES_MARGIN = { left: 40, right: 40, top: 8, bottom: 8 };

function Legend({ series }: { series: { name: string; color: string }[] }) {
  return (
    <ul className="chart-legend">
      {series.map((s) => (
        <li key={s.name}>
          <span className="swatch" style={{ background: s.color }} />
          {s.name}
        </li>
      ))}
    </ul>
  );
}

function Tooltip({ left, top, children }: { left: number; top: number; children: ReactNode }) {
  return (
    <div className="chart-tooltip" style={{ left, top }} role="status">
      {children}
    </div>
  );
}

/** Vertical value axis: tick labels and the grid lines across the plot. */
function ValueAxis(props: {
  ticks: number[];
  y: (v: number) => number;
  x: number;
  plotLeft: number;
  plotRight: number;
  side: 'left' | 'right';
  format: (v: number) => string;
  grid: boolean;
}) {
  const { ticks, y, x, side, format } = props;
  return (
    <g className={`y-ticks y-ticks-${side}`}>
      {ticks.map((t) => (
        <g key={t}>
          {props.grid && (
            <line className="grid" x1={props.plotLeft} x2={props.plotRight} y1={y(t)} y2={y(t)} />
          )}
          <text
            x={side === 'left' ? x - TICK - 2 : x + TICK + 2}
            y={y(t)}
            dy="0.35em"
            textAnchor={side === 'left' ? 'end' : 'start'}
          >
            {format(t)}
          </text>
        </g>
      ))}
    </g>
  );
}

/**
 * Histograms of the same bins overlaid as translucent step areas: edges [n + 1], each series' counts [n].
 * The x axis is labelled at `xTicks` (round values inside the edges' span).
 */
export const HistogramChart = memo(function HistogramChart(props: {
  edges: ArrayLike<number>;
  series: ChartSeries[];
  height: number;
  xTicks: number[];
  formatX: (v: number) => string;
  formatY: (v: number) => string;
  /** The tooltip's heading for a bin: its centre by default. */
  formatBin?: (lo: number, hi: number) => string;
  testId?: string;
}) {
  const { edges, series, height, xTicks, formatX, formatY } = props;
  const [ref, width] = useWidth();
  const [hover, setHover] = useState<number>();

  const g = useMemo(() => {
    const n = edges.length - 1;
    const lo = edges[0];
    const hi = edges[n];
    const x = linearScale(
      lo,
      hi,
      HISTOGRAM_MARGIN.left,
      Math.max(HISTOGRAM_MARGIN.left + 1, width - HISTOGRAM_MARGIN.right),
    );
    const yAxis = valueAxis(
      series.map((s) => s.values),
      4,
    );
    const y = linearScale(
      yAxis.domain[0],
      yAxis.domain[1],
      height - HISTOGRAM_MARGIN.bottom,
      HISTOGRAM_MARGIN.top,
    );
    const paths = series.map((s) => stepAreaPath(edges, s.values, x, y));
    const inside = xTicks.filter((t) => t >= lo && t <= hi);
    return { x, y, yTicks: yAxis.ticks, paths, xTicks: inside };
  }, [edges, series, width, height, xTicks]);
  const onMove = (e: MouseEvent<SVGSVGElement>) => {
    const px = e.clientX - e.currentTarget.getBoundingClientRect().left;
    if (px < HISTOGRAM_MARGIN.left || px > width - HISTOGRAM_MARGIN.right) return setHover(undefined);
    const lo = edges[0];
    const hi = edges[edges.length - 1];
    setHover(
      binAt(
        edges,
        lo +
          ((px - HISTOGRAM_MARGIN.left) /
            Math.max(1, width - HISTOGRAM_MARGIN.left - HISTOGRAM_MARGIN.right)) *
            (hi - lo),
      ),
    );
  };
  const bottom = height - HISTOGRAM_MARGIN.bottom;
  return (
    <div className="chart svg-chart" data-testid={props.testId} ref={ref}>
      {width > 0 && (
        <svg width={width} height={height} onMouseMove={onMove} onMouseLeave={() => setHover(undefined)}>
          <ValueAxis
            ticks={g.yTicks}
            y={g.y}
            x={HISTOGRAM_MARGIN.left}
            plotLeft={HISTOGRAM_MARGIN.left}
            plotRight={width - HISTOGRAM_MARGIN.right}
            side="left"
            format={formatY}
            grid
          />
          <g className="x-ticks">
            {g.xTicks.map((t) => (
              <g key={t}>
                <line className="grid" x1={g.x(t)} x2={g.x(t)} y1={HISTOGRAM_MARGIN.top} y2={bottom} />
                <text x={g.x(t)} y={bottom + TICK + FONT} textAnchor="middle">
                  {formatX(t)}
                </text>
              </g>
            ))}
          </g>
          {g.paths.map((d, i) => (
            <path
              key={series[i].name}
              className="area"
              data-series={series[i].name}
              d={d}
              style={{ fill: series[i].color, stroke: series[i].color }}
            />
          ))}
          <line
            className="axis"
            x1={HISTOGRAM_MARGIN.left}
            x2={width - HISTOGRAM_MARGIN.right}
            y1={bottom}
            y2={bottom}
          />
          {hover !== undefined && (
            <rect
              className="hover"
              x={g.x(edges[hover])}
              width={Math.max(1, g.x(edges[hover + 1]) - g.x(edges[hover]))}
              y={HISTOGRAM_MARGIN.top}
              height={bottom - HISTOGRAM_MARGIN.top}
            />
          )}
        </svg>
      )}
      {hover !== undefined && (
        <Tooltip left={Math.min(width - 160, g.x(edges[hover + 1]) + 8)} top={HISTOGRAM_MARGIN.top}>
          <strong>
            {props.formatBin
              ? props.formatBin(edges[hover], edges[hover + 1])
              : `≈ ${formatX((edges[hover] + edges[hover + 1]) / 2)}`}
          </strong>
          {series.map((s) => (
            <div key={s.name} style={{ color: s.color }}>
              {s.name}: {s.values[hover]}
            </div>
          ))}
        </Tooltip>
      )}
      <Legend series={series} />
    </div>
  );
});

/** A line series on the left or the right value axis. */
export interface LineSeries extends ChartSeries {
  axis: 'left' | 'right';
}

/**
 * Lines over named points (one x position per label, no x labels: the tooltip names the point),
 * with a value axis on each side; a click on the plot selects the point nearest the pointer.
 */
export const LinesChart = memo(function LinesChart(props: {
  labels: string[];
  series: LineSeries[];
  height: number;
  formatY?: (v: number) => string;
  onSelect?: (label: string) => void;
  testId?: string;
}) {
  const { labels, series, height } = props;
  const format = props.formatY ?? ((v: number) => String(v));
  const [ref, width] = useWidth();
  const [hover, setHover] = useState<number>();

  const g = useMemo(() => {
    const n = labels.length;
    const x = linearScale(
      0,
      Math.max(1, n - 1),
      LINES_MARGIN.left,
      Math.max(LINES_MARGIN.left + 1, width - LINES_MARGIN.right),
    );
    const axes = (['left', 'right'] as const).map((side) => {
      const axis = valueAxis(
        series.filter((s) => s.axis === side).map((s) => s.values),
        5,
      );
      return {
        ...axis,
        y: linearScale(axis.domain[0], axis.domain[1], height - LINES_MARGIN.bottom, LINES_MARGIN.top),
      };
    });
    const paths = series.map((s) => linePath(s.values, x, axes[s.axis === 'left' ? 0 : 1].y));
    return { x, left: axes[0], right: axes[1], paths };
  }, [labels, series, width, height]);
  const indexAt = (e: MouseEvent<SVGSVGElement>) => {
    const px = e.clientX - e.currentTarget.getBoundingClientRect().left;
    const span = Math.max(1, width - LINES_MARGIN.left - LINES_MARGIN.right);
    const i = Math.round(((px - LINES_MARGIN.left) / span) * Math.max(1, labels.length - 1));
    return labels.length ? Math.min(labels.length - 1, Math.max(0, i)) : undefined;
  };
  const bottom = height - LINES_MARGIN.bottom;
  return (
    <div className="chart svg-chart" data-testid={props.testId} ref={ref}>
      {width > 0 && (
        <svg
          width={width}
          height={height}
          onMouseMove={(e) => setHover(indexAt(e))}
          onMouseLeave={() => setHover(undefined)}
          onClick={(e) => {
            const i = indexAt(e);
            if (i !== undefined) props.onSelect?.(labels[i]);
          }}
          style={props.onSelect ? { cursor: 'pointer' } : undefined}
        >
          <ValueAxis
            ticks={g.left.ticks}
            y={g.left.y}
            x={LINES_MARGIN.left}
            plotLeft={LINES_MARGIN.left}
            plotRight={width - LINES_MARGIN.right}
            side="left"
            format={format}
            grid
          />
          <ValueAxis
            ticks={g.right.ticks}
            y={g.right.y}
            x={width - LINES_MARGIN.right}
            plotLeft={LINES_MARGIN.left}
            plotRight={width - LINES_MARGIN.right}
            side="right"
            format={format}
            grid={false}
          />
          <line
            className="axis"
            x1={LINES_MARGIN.left}
            x2={width - LINES_MARGIN.right}
            y1={bottom}
            y2={bottom}
          />
          {g.paths.map((d, i) => (
            <path
              key={series[i].name}
              className="line"
              data-series={series[i].name}
              d={d}
              style={{ stroke: series[i].color }}
            />
          ))}
          {hover !== undefined && (
            <line className="hover-line" x1={g.x(hover)} x2={g.x(hover)} y1={LINES_MARGIN.top} y2={bottom} />
          )}
        </svg>
      )}
      {hover !== undefined && (
        <Tooltip left={Math.min(width - 220, g.x(hover) + 8)} top={LINES_MARGIN.top}>
          <strong>{labels[hover]}</strong>
          {series.map((s) => (
            <div key={s.name} style={{ color: s.color }}>
              {s.name}: {format(s.values[hover])}
            </div>
          ))}
        </Tooltip>
      )}
      <Legend series={series} />
    </div>
  );
});
