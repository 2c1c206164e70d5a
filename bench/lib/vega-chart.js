// Charts for benchmark results: Vega-Lite specs rendered to SVG headlessly with Vega (no canvas
// needed for SVG), so a chart is a declarative spec instead of hand-drawn SVG.
import * as vega from 'vega'
import { compile } from 'vega-lite'

/** Renders a Vega-Lite spec to an SVG string. */
export async function vegaLiteSvg (spec) {
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: 'none' })
  try {
    return await view.toSVG()
  } finally {
    view.finalize()
  }
}
