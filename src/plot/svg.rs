//! A small SVG writer: just the elements the loss plot uses (lines,
//! polylines, circles, rectangles, text), with the text escaped.

use std::fmt::Write;

/// The font the plot names; the PNG renderer embeds DejaVu Sans so it
/// looks the same everywhere (browsers fall back to a sans-serif font).
pub const FONT_FAMILY: &str = "DejaVu Sans, Verdana, Arial, sans-serif";

/// An estimate of the width of `text` in DejaVu Sans at `size` px: its
/// average advance is about 0.6 em, so 0.62 em per character errs wide and
/// leaves room, never clipping a label.
pub fn text_width(text: &str, size: f64) -> f64 {
    text.chars().count() as f64 * size * 0.62
}

/// Escape the characters XML gives meaning to.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Where text is anchored horizontally.
#[derive(Clone, Copy)]
pub enum Anchor {
    Start,
    Middle,
    End,
}

/// How a line is drawn.
#[derive(Clone, Copy)]
pub struct Stroke<'a> {
    pub color: &'a str,
    pub width: f64,
    pub opacity: f64,
    /// `Some("8 5")` for a dashed line.
    pub dash: Option<&'a str>,
}

impl<'a> Stroke<'a> {
    pub fn solid(color: &'a str, width: f64) -> Self {
        Stroke {
            color,
            width,
            opacity: 1.0,
            dash: None,
        }
    }

    fn attributes(&self) -> String {
        let mut a = format!(
            r#"stroke="{}" stroke-width="{}" fill="none" stroke-linejoin="round" stroke-linecap="round""#,
            self.color, self.width
        );
        if self.opacity < 1.0 {
            let _ = write!(a, r#" stroke-opacity="{}""#, self.opacity);
        }
        if let Some(dash) = self.dash {
            let _ = write!(a, r#" stroke-dasharray="{dash}""#);
        }
        a
    }
}

/// An SVG document being written.
pub struct Svg {
    body: String,
    width: u32,
    height: u32,
}

impl Svg {
    /// A `width` x `height` picture on a white background.
    pub fn new(width: u32, height: u32) -> Self {
        let mut svg = Svg {
            body: String::new(),
            width,
            height,
        };
        svg.rect((0.0, 0.0), (width as f64, height as f64), "white", None);
        svg
    }

    pub fn rect(&mut self, at: (f64, f64), size: (f64, f64), fill: &str, stroke: Option<&str>) {
        let stroke = stroke.map_or(String::new(), |s| format!(r#" stroke="{s}""#));
        let _ = writeln!(
            self.body,
            r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{fill}"{stroke}/>"#,
            at.0, at.1, size.0, size.1
        );
    }

    pub fn line(&mut self, a: (f64, f64), b: (f64, f64), stroke: Stroke) {
        let _ = writeln!(
            self.body,
            r#"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" {}/>"#,
            a.0,
            a.1,
            b.0,
            b.1,
            stroke.attributes()
        );
    }

    pub fn polyline(&mut self, points: &[(f64, f64)], stroke: Stroke) {
        if points.len() < 2 {
            return;
        }
        let mut coords = String::with_capacity(points.len() * 14);
        for (x, y) in points {
            let _ = write!(coords, "{x:.1},{y:.1} ");
        }
        let _ = writeln!(
            self.body,
            r#"<polyline points="{}" {}/>"#,
            coords.trim_end(),
            stroke.attributes()
        );
    }

    pub fn circle(&mut self, at: (f64, f64), r: f64, fill: &str) {
        let _ = writeln!(
            self.body,
            r#"<circle cx="{:.1}" cy="{:.1}" r="{r}" fill="{fill}" stroke="white" stroke-width="1"/>"#,
            at.0, at.1
        );
    }

    /// Text with its baseline at `at`; `rotate` turns it a quarter left
    /// (for a vertical axis title).
    pub fn text(&mut self, at: (f64, f64), size: f64, anchor: Anchor, text: &str, rotate: bool) {
        let anchor = match anchor {
            Anchor::Start => "start",
            Anchor::Middle => "middle",
            Anchor::End => "end",
        };
        let transform = if rotate {
            format!(r#" transform="rotate(-90 {:.1} {:.1})""#, at.0, at.1)
        } else {
            String::new()
        };
        let _ = writeln!(
            self.body,
            r##"<text x="{:.1}" y="{:.1}" font-size="{size}" text-anchor="{anchor}" fill="#222"{transform}>{}</text>"##,
            at.0,
            at.1,
            escape(text)
        );
    }

    /// The finished document.
    pub fn finish(self) -> String {
        format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="{FONT_FAMILY}">
{}</svg>
"#,
            self.body,
            w = self.width,
            h = self.height
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        let mut svg = Svg::new(10, 10);
        svg.text((0.0, 0.0), 10.0, Anchor::Start, "a<b & \"c\"", false);
        let doc = svg.finish();
        assert!(doc.contains("a&lt;b &amp; &quot;c&quot;"), "{doc}");
        assert!(!doc.contains("a<b"));
    }
}
