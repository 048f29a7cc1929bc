//! bench/run's chart: horizontal bars of req/s, one panel per app and kind of load, from the
//! tab-separated lines that bench/report.py writes (`panel  setup  req/s  herdsman?`).
//!
//!   herdsman-bench-chart bench/out/chart.tsv bench/chart.svg

use std::process::ExitCode;

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

const WIDTH: u32 = 960;
const BAR_HEIGHT: u32 = 24;
const PANEL_EXTRA: u32 = 70;
const HERDSMAN: RGBColor = RGBColor(0x1f, 0x6f, 0xb4);
const OTHER: RGBColor = RGBColor(0xa0, 0xa0, 0xa0);

/// One bar: a setup's median req/s.
struct Bar {
    setup: String,
    value: f64,
    herdsman: bool,
}

/// One panel: an app under one kind of load, its bars in the file's order.
struct Panel {
    title: String,
    bars: Vec<Bar>,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, input, output] = args.as_slice() else {
        eprintln!("usage: herdsman-bench-chart CHART.tsv OUTPUT.svg");
        return ExitCode::from(2);
    };
    let text = match std::fs::read_to_string(input) {
        Ok(text) => text,
        Err(error) => {
            eprintln!("herdsman-bench-chart: cannot read {input}: {error}");
            return ExitCode::from(1);
        }
    };
    let panels = match parse(&text) {
        Ok(panels) if !panels.is_empty() => panels,
        Ok(_) => {
            eprintln!("herdsman-bench-chart: {input} has no bars: did bench/run measure anything?");
            return ExitCode::from(1);
        }
        Err(error) => {
            eprintln!("herdsman-bench-chart: {input}: {error}");
            return ExitCode::from(1);
        }
    };
    match draw(&panels, output) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("herdsman-bench-chart: cannot draw {output}: {error}");
            ExitCode::from(1)
        }
    }
}

fn parse(text: &str) -> Result<Vec<Panel>, String> {
    let mut panels: Vec<Panel> = Vec::new();
    for (index, line) in text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
    {
        let fields: Vec<&str> = line.split('\t').collect();
        let [title, setup, value, herdsman] = fields.as_slice() else {
            return Err(format!(
                "line {}: {} fields, expected 4",
                index + 1,
                fields.len()
            ));
        };
        let value: f64 = value
            .parse()
            .map_err(|_| format!("line {}: `{value}` is not a number", index + 1))?;
        let bar = Bar {
            setup: setup.to_string(),
            value,
            herdsman: *herdsman == "1",
        };
        match panels.iter_mut().find(|panel| panel.title == *title) {
            Some(panel) => panel.bars.push(bar),
            None => panels.push(Panel {
                title: title.to_string(),
                bars: vec![bar],
            }),
        }
    }
    Ok(panels)
}

fn panel_height(panel: &Panel) -> u32 {
    PANEL_EXTRA + BAR_HEIGHT * panel.bars.len() as u32
}

fn draw(panels: &[Panel], output: &str) -> Result<(), Box<dyn std::error::Error>> {
    let height = panels.iter().map(panel_height).sum();
    let root = SVGBackend::new(output, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut rest = root;
    for panel in panels {
        let (area, below) = rest.split_vertically(panel_height(panel));
        draw_panel(&area, panel)?;
        rest = below;
    }
    rest.present()?;
    Ok(())
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    panel: &Panel,
) -> Result<(), Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    let count = panel.bars.len() as i32;
    let most = panel.bars.iter().map(|bar| bar.value).fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!("{} (herdsman in blue)", panel.title),
            ("sans-serif", 16),
        )
        .margin(8)
        .x_label_area_size(24)
        .y_label_area_size(270)
        .build_cartesian_2d(0.0..most * 1.18, (0..count).into_segmented())?;
    // The first bar of the file at the top.
    let label = |value: &SegmentValue<i32>| match value {
        SegmentValue::CenterOf(row) if (0..count).contains(row) => {
            panel.bars[(count - 1 - row) as usize].setup.clone()
        }
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .disable_y_mesh()
        .light_line_style(WHITE)
        .x_labels(6)
        .y_labels(panel.bars.len())
        .y_label_formatter(&label)
        .x_label_formatter(&|value| thousands(*value))
        .label_style(("sans-serif", 13))
        .draw()?;
    for (index, bar) in panel.bars.iter().enumerate() {
        let row = count - 1 - index as i32;
        let colour = if bar.herdsman { HERDSMAN } else { OTHER };
        let mut rectangle = Rectangle::new(
            [
                (0.0, SegmentValue::Exact(row)),
                (bar.value, SegmentValue::Exact(row + 1)),
            ],
            colour.filled(),
        );
        // Pixels of white between two bars.
        rectangle.set_margin(3, 3, 0, 0);
        chart.draw_series(std::iter::once(rectangle))?;
        let style =
            TextStyle::from(("sans-serif", 12).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
        chart.draw_series(std::iter::once(Text::new(
            format!(" {}", thousands(bar.value)),
            (bar.value, SegmentValue::CenterOf(row)),
            style,
        )))?;
    }
    Ok(())
}

/// 12345.6 → "12,346".
fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut grouped = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_thousands() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(1234567.0), "1,234,567");
    }

    #[test]
    fn parses_panels_in_order_and_rejects_bad_lines() {
        let panels = parse("a\tx\t10\t1\nb\ty\t20\t0\na\tz\t30\t0\n").unwrap();
        assert_eq!(panels.len(), 2);
        assert_eq!(panels[0].title, "a");
        assert_eq!(panels[0].bars.len(), 2);
        assert!(panels[0].bars[0].herdsman);
        assert_eq!(panels[0].bars[1].value, 30.0);
        assert_eq!(
            parse("a\tx\tten\t1\n").err().unwrap(),
            "line 1: `ten` is not a number"
        );
        assert_eq!(
            parse("a\tx\n").err().unwrap(),
            "line 1: 2 fields, expected 4"
        );
    }
}
